"""vodup: upload to Tencent Cloud VOD from Python with signatures from a signing server (client upload, UGC).

from vodup import ApiClient, ApiSigner, Uploader
signer = ApiSigner(ApiClient("https://api.example.com", token), {"title": "My clip"})
result = Uploader(signer).upload("clip.mp4", cover="cover.jpg")
"""

from vodup.api import ApiClient, ApiSigner
from vodup.errors import (
    ApiError,
    DuplicateSignature,
    FileNotUploaded,
    InputError,
    IntegrityError,
    InvalidSignature,
    SessionExpired,
    SignatureExpired,
    StateError,
    TransferError,
    UploadCancelled,
    UploadInterrupted,
    VodError,
    VodupError,
)
from vodup.ugc import Network
from vodup.uploader import (
    CancellingSigner,
    Progress,
    ReportingSigner,
    ReportsOutcome,
    ResumableSigner,
    Uploader,
    UploadResult,
)

__all__ = [
    "ApiClient",
    "ApiError",
    "ApiSigner",
    "CancellingSigner",
    "DuplicateSignature",
    "FileNotUploaded",
    "InputError",
    "IntegrityError",
    "InvalidSignature",
    "Network",
    "Progress",
    "ReportingSigner",
    "ReportsOutcome",
    "ResumableSigner",
    "SessionExpired",
    "SignatureExpired",
    "StateError",
    "TransferError",
    "UploadCancelled",
    "UploadInterrupted",
    "UploadResult",
    "Uploader",
    "VodError",
    "VodupError",
]
