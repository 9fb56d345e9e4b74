"""moto, extended so that the deploy can be rehearsed against it (docs/deploy-rehearsal.md).

moto 5.2.5 silently skips five resource types of `infra/stage.json` in CloudFormation and still reports
`CREATE_COMPLETE`; its API Gateway import refuses the Swagger 2.0 document `chalice deploy` sends. This
module gives CloudFormation the missing types, built on moto's own Secrets Manager and Cognito backends so
that the secret and the pool are real objects the deploy and the app then read and sign in against:
  - `AWS::SecretsManager::Secret`, including `GenerateSecretString` (as the template uses it);
  - `AWS::Cognito::UserPool` and `AWS::Cognito::UserPoolClient`;
  - `AWS::CloudWatch::Alarm`, on moto's CloudWatch backend (moto has the API, not the resource type);
  - `AWS::IAM::OIDCProvider` (GitHub's, in a stage's bootstrap stack), on moto's IAM backend;
  - `AWS::Pipes::Pipe` (the outbox pipe of infra/events.json), on moto's Pipes backend, which stores the
    pipe's configuration for DescribePipe and delivers nothing;
  - the table's TTL and point-in-time recovery, which moto's table model ignores;
  - an IMPORT change set adopting an existing table (moto ignores `ResourcesToImport` and would create it),
    and a `Retain` resource kept when an update removes it (moto deletes it);
and lets API Gateway import what Chalice sends: a default `info.description`, the `swagger` key dropped
(the rest is the same document), CORS `OPTIONS` mock integrations without `uri`/`httpMethod`, and the
document's gateway responses (`x-amazon-apigateway-gateway-responses`) set as AWS sets them.

Importing this module applies the patches; it must happen before moto's CloudFormation parses a template
(moto caches its resource type map on first use). `serve()` starts moto's server in this process.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from moto.apigateway import models as apigateway
from moto.cloudformation.models import ChangeSet
from moto.cloudformation.parsing import ResourceMap
from moto.cloudwatch.models import cloudwatch_backends
from moto.cognitoidp.models import cognitoidp_backends
from moto.core.common_models import CloudFormationModel
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.table import Table
from moto.iam.models import iam_backends
from moto.pipes.models import pipes_backends
from moto.secretsmanager.models import secretsmanager_backends
from moto.server import ThreadedMotoServer
from moto.utilities.utils import get_partition


class CfnSecret(CloudFormationModel):
    def __init__(self, arn: str, name: str) -> None:
        self.arn = arn
        self.name = name

    @property
    def physical_resource_id(self) -> str:
        return self.arn  # `Ref` of a secret is its ARN

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SecretsManager::Secret"

    @staticmethod
    def cloudformation_name_type() -> str:
        return "Name"

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr == "Id"

    def get_cfn_attribute(self, attribute_name: str) -> str:
        return self.arn

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str, **_: Any
    ) -> CfnSecret:
        properties = cloudformation_json.get("Properties", {})
        backend = secretsmanager_backends[account_id][region_name]
        secret_string = properties.get("SecretString")
        generate = properties.get("GenerateSecretString")
        if generate is not None:
            secret_string = _generated_secret_string(backend, generate)
        created = json.loads(
            backend.create_secret(
                name=resource_name,
                secret_string=secret_string,
                secret_binary=None,
                description=properties.get("Description"),
                tags=properties.get("Tags"),
                kms_key_id=properties.get("KmsKeyId"),
                client_request_token=None,
                replica_regions=[],
                force_overwrite=False,
            )
        )
        return cls(created["ARN"], resource_name)

    @classmethod
    def delete_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str
    ) -> None:
        secretsmanager_backends[account_id][region_name].delete_secret(resource_name, None, True)


def _generated_secret_string(backend: Any, generate: dict[str, Any]) -> str:
    password = json.loads(
        backend.get_random_password(
            int(generate.get("PasswordLength", 32)),
            generate.get("ExcludeCharacters", ""),
            bool(generate.get("ExcludeNumbers", False)),
            bool(generate.get("ExcludePunctuation", False)),
            bool(generate.get("ExcludeUppercase", False)),
            bool(generate.get("ExcludeLowercase", False)),
            bool(generate.get("IncludeSpace", False)),
            bool(generate.get("RequireEachIncludedType", True)),
        )
    )["RandomPassword"]
    if "SecretStringTemplate" not in generate:
        return str(password)
    document = json.loads(generate["SecretStringTemplate"])
    document[generate["GenerateStringKey"]] = password
    return json.dumps(document)


class CfnUserPool(CloudFormationModel):
    def __init__(self, pool: Any) -> None:
        self.pool = pool

    @property
    def physical_resource_id(self) -> str:
        return str(self.pool.id)

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::Cognito::UserPool"

    @staticmethod
    def cloudformation_name_type() -> str:
        return "UserPoolName"

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr in ("Arn", "ProviderName", "ProviderURL", "UserPoolId")

    def get_cfn_attribute(self, attribute_name: str) -> str:
        provider = f"cognito-idp.{self.pool.region}.amazonaws.com/{self.pool.id}"
        attributes: dict[str, str] = {
            "Arn": self.pool.arn,
            "UserPoolId": self.pool.id,
            "ProviderName": provider,
            "ProviderURL": f"https://{provider}",
        }
        return attributes[attribute_name]

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str, **_: Any
    ) -> CfnUserPool:
        properties = {k: v for k, v in cloudformation_json.get("Properties", {}).items() if k != "UserPoolName"}
        return cls(cognitoidp_backends[account_id][region_name].create_user_pool(resource_name, properties))

    @classmethod
    def delete_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str
    ) -> None:
        backend = cognitoidp_backends[account_id][region_name]
        for pool_id, pool in list(backend.user_pools.items()):
            if pool.name == resource_name:
                backend.delete_user_pool(pool_id)


class CfnUserPoolClient(CloudFormationModel):
    def __init__(self, client: Any) -> None:
        self.client = client

    @property
    def physical_resource_id(self) -> str:
        return str(self.client.id)

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::Cognito::UserPoolClient"

    @staticmethod
    def cloudformation_name_type() -> str:
        return "ClientName"

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr in ("ClientId", "ClientSecret", "Name")

    def get_cfn_attribute(self, attribute_name: str) -> str:
        return str(
            {"ClientId": self.client.id, "ClientSecret": self.client.secret, "Name": self.client.name}[attribute_name]
        )

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str, **_: Any
    ) -> CfnUserPoolClient:
        properties = dict(cloudformation_json.get("Properties", {}))
        pool_id = properties.pop("UserPoolId")
        generate_secret = bool(properties.pop("GenerateSecret", False))
        properties["ClientName"] = resource_name
        backend = cognitoidp_backends[account_id][region_name]
        return cls(backend.create_user_pool_client(pool_id, generate_secret, properties))


_create_table = Table.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]


class CfnAlarm(CloudFormationModel):
    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def physical_resource_id(self) -> str:
        return self.name  # `Ref` of an alarm is its name

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::CloudWatch::Alarm"

    @staticmethod
    def cloudformation_name_type() -> str:
        return "AlarmName"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str, **_: Any
    ) -> CfnAlarm:
        properties = cloudformation_json["Properties"]
        cloudwatch_backends[account_id][region_name].put_metric_alarm(
            name=resource_name,
            namespace=properties["Namespace"],
            metric_name=properties["MetricName"],
            comparison_operator=properties["ComparisonOperator"],
            evaluation_periods=int(properties["EvaluationPeriods"]),
            datapoints_to_alarm=int(properties.get("DatapointsToAlarm", properties["EvaluationPeriods"])),
            period=int(properties["Period"]),
            threshold=float(properties["Threshold"]),
            statistic=properties["Statistic"],
            description=properties.get("AlarmDescription", ""),
            dimensions=properties.get("Dimensions", []),
            alarm_actions=properties.get("AlarmActions", []),
            treat_missing_data=properties.get("TreatMissingData"),
        )
        return cls(resource_name)

    @classmethod
    def update_from_cloudformation_json(
        cls,
        original_resource: CfnAlarm,
        new_resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
    ) -> CfnAlarm:
        # PutMetricAlarm replaces the alarm of that name, as CloudFormation's update does.
        return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)

    @classmethod
    def delete_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str
    ) -> None:
        cloudwatch_backends[account_id][region_name].delete_alarms([resource_name])


class CfnOidcProvider(CloudFormationModel):
    def __init__(self, arn: str) -> None:
        self.arn = arn

    @property
    def physical_resource_id(self) -> str:
        return self.arn  # `Ref` of a provider is its ARN

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::IAM::OIDCProvider"

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""  # a provider has no name; its URL identifies it

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr == "Arn"

    def get_cfn_attribute(self, attribute_name: str) -> str:
        return self.arn

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str, **_: Any
    ) -> CfnOidcProvider:
        properties = cloudformation_json["Properties"]
        provider = iam_backends[account_id][get_partition(region_name)].create_open_id_connect_provider(
            properties["Url"], properties.get("ThumbprintList", []), properties.get("ClientIdList", []), []
        )
        return cls(provider.arn)


class CfnPipe(CloudFormationModel):
    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe

    @property
    def physical_resource_id(self) -> str:
        return str(self.pipe.name)  # `Ref` of a pipe is its name

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::Pipes::Pipe"

    @staticmethod
    def cloudformation_name_type() -> str:
        return "Name"

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr == "Arn"

    def get_cfn_attribute(self, attribute_name: str) -> str:
        return str(self.pipe.arn)

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str, **_: Any
    ) -> CfnPipe:
        properties = cloudformation_json["Properties"]
        pipe = pipes_backends[account_id][region_name].create_pipe(
            name=resource_name,
            description=properties.get("Description"),
            desired_state=properties.get("DesiredState"),
            source=properties["Source"],
            source_parameters=properties.get("SourceParameters"),
            enrichment=properties.get("Enrichment"),
            enrichment_parameters=properties.get("EnrichmentParameters"),
            target=properties["Target"],
            target_parameters=properties.get("TargetParameters"),
            role_arn=properties["RoleArn"],
            tags=properties.get("Tags"),
            log_configuration=properties.get("LogConfiguration"),
            kms_key_identifier=properties.get("KmsKeyIdentifier"),
        )
        return cls(pipe)

    @classmethod
    def update_from_cloudformation_json(
        cls,
        original_resource: CfnPipe,
        new_resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
    ) -> CfnPipe:
        pipes_backends[account_id][region_name].delete_pipe(original_resource.pipe.name)
        return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)

    @classmethod
    def delete_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str
    ) -> None:
        pipes_backends[account_id][region_name].delete_pipe(resource_name)


def _create_table_with_ttl_and_pitr(
    cls: type[Table],
    /,
    resource_name: str,
    cloudformation_json: dict[str, Any],
    account_id: str,
    region_name: str,
    **kw: Any,
) -> Any:
    properties = cloudformation_json["Properties"]
    backend = dynamodb_backends[account_id][region_name]
    if _importing.active and properties["TableName"] in backend.tables:
        return backend.tables[properties["TableName"]]  # an import takes the table as it is
    table = _create_table(cls, resource_name, cloudformation_json, account_id, region_name, **kw)
    if "TimeToLiveSpecification" in properties:
        backend.update_time_to_live(table.name, properties["TimeToLiveSpecification"])
    if "PointInTimeRecoverySpecification" in properties:
        backend.update_continuous_backups(table.name, properties["PointInTimeRecoverySpecification"])
    return table


setattr(Table, "create_from_cloudformation_json", classmethod(_create_table_with_ttl_and_pitr))  # noqa: B010


class _Importing(threading.local):
    active = False


_importing = _Importing()
_apply_change_set = ChangeSet.apply
_delete_resource = ResourceMap._delete_resource


def _apply_import_change_set(self: ChangeSet) -> None:
    """An IMPORT change set (moto would create its resources) adopts the existing table it names."""
    _importing.active = self.change_set_type == "IMPORT"
    try:
        _apply_change_set(self)
    finally:
        _importing.active = False


def _delete_unless_retained(self: ResourceMap, parsed_resource: Any, resource_json: dict[str, Any]) -> None:
    """A resource an update removes from the template is kept when its DeletionPolicy says Retain, as in AWS
    (moto honours the policy only when the whole stack is deleted)."""
    if resource_json.get("DeletionPolicy") != "Retain":
        _delete_resource(self, parsed_resource, resource_json)


setattr(ChangeSet, "apply", _apply_import_change_set)  # noqa: B010
setattr(ResourceMap, "_delete_resource", _delete_unless_retained)  # noqa: B010

_import_rest_api = apigateway.APIGatewayBackend.import_rest_api
_put_rest_api = apigateway.APIGatewayBackend.put_rest_api
_put_integration = apigateway.APIGatewayBackend.put_integration


def _openapi_view(api_doc: dict[str, Any]) -> dict[str, Any]:
    document = {key: value for key, value in api_doc.items() if key != "swagger"}
    document["info"] = {"description": "", **document.get("info", {})}
    return document


def _import_swagger(self: Any, api_doc: dict[str, Any], fail_on_warnings: bool) -> Any:
    api = _import_rest_api(self, _openapi_view(api_doc), fail_on_warnings)
    _apply_gateway_responses(api, api_doc, replace=True)
    return api


def _put_swagger(
    self: Any, function_id: str, api_doc: dict[str, Any], fail_on_warnings: bool, mode: str = "merge"
) -> Any:
    api = _put_rest_api(self, function_id, _openapi_view(api_doc), fail_on_warnings, mode)
    _apply_gateway_responses(api, api_doc, replace=mode == "overwrite")
    return api


def _apply_gateway_responses(api: Any, api_doc: dict[str, Any], replace: bool) -> None:
    """What AWS does with the document's gateway responses and moto ignores: an import sets them, and an
    overwrite also deletes those the document lacks."""
    declared = api_doc.get("x-amazon-apigateway-gateway-responses", {})
    if replace:
        for response_type in set(api.gateway_responses) - set(declared):
            api.delete_gateway_response(response_type)
    for response_type, response in declared.items():
        api.put_gateway_response(
            response_type,
            status_code=response.get("statusCode"),
            response_parameters=response.get("responseParameters"),
            response_templates=response.get("responseTemplates"),
        )


def _put_integration_mock_allowed(
    self: Any,
    function_id: str,
    resource_id: str,
    method_type: str,
    integration_type: str,
    uri: str | None = None,
    integration_method: str | None = None,
    **kwargs: Any,
) -> Any:
    return _put_integration(
        self, function_id, resource_id, method_type, integration_type, uri or "", integration_method or "", **kwargs
    )


for _name, _patched in (
    ("import_rest_api", _import_swagger),
    ("put_rest_api", _put_swagger),
    ("put_integration", _put_integration_mock_allowed),
):
    setattr(apigateway.APIGatewayBackend, _name, _patched)


def serve(port: int = 0) -> tuple[ThreadedMotoServer, str]:
    """moto's server on 127.0.0.1 in a background thread of this process (port 0: any free port)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, bound_port = server.get_host_and_port()
    return server, f"http://{host}:{bound_port}"
