"""Encryption at rest for Shopify access and refresh tokens (Fernet: AES-128-CBC + HMAC-SHA256)."""
from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken


class TokenCipher:
    def __init__(self, key: bytes):
        self._fernet = Fernet(key)

    def encrypt(self, token: str | None) -> str | None:
        if token is None:
            return None
        return self._fernet.encrypt(token.encode()).decode()

    def decrypt(self, blob: str | None) -> str | None:
        if blob is None:
            return None
        try:
            return self._fernet.decrypt(blob.encode()).decode()
        except InvalidToken:
            raise ValueError("stored token cannot be decrypted: TOKEN_ENCRYPTION_KEY changed?") from None
