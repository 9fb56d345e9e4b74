"""A throw-away user of the stage's own Cognito pool, so that the smoke test can call the API as a user.

The user is made through the admin API (no e-mail is sent), signs in with ADMIN_USER_PASSWORD_AUTH (the
app client allows it) and is deleted afterwards, whatever the smoke test found."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import ClientError


@contextmanager
def smoke_user_token(cognito: Any, pool_id: str, client_id: str) -> Iterator[str]:
    """An access token of a new user of the pool (its `client_id` is the app client: the stage's audience)."""
    username = f"smoke-{secrets.token_hex(6)}@smoke.invalid"
    # The pool asks for 12+ characters with upper case, lower case and digits.
    password = secrets.token_urlsafe(24) + "Aa1"
    cognito.admin_create_user(
        UserPoolId=pool_id, Username=username, MessageAction="SUPPRESS", TemporaryPassword=password
    )
    try:
        cognito.admin_set_user_password(UserPoolId=pool_id, Username=username, Password=password, Permanent=True)
        result = cognito.admin_initiate_auth(
            UserPoolId=pool_id,
            ClientId=client_id,
            AuthFlow="ADMIN_USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": username, "PASSWORD": password},
        )
        yield str(result["AuthenticationResult"]["AccessToken"])
    finally:
        try:
            cognito.admin_delete_user(UserPoolId=pool_id, Username=username)
        except ClientError as error:  # the smoke result matters more than this clean-up; say so and go on
            print(f"deploy: could not delete the smoke test user {username}: {error}", flush=True)
