"""A client-side model of transit symmetric ciphertexts (reference transit-api.md
§2.3-2.6), used to check kmsd's output against keys exported from it.

AES-GCM and ChaCha20-Poly1305 come from python3-cryptography; XChaCha20-Poly1305 is
HChaCha20 (below, pure Python) + ChaCha20-Poly1305 with nonce 0^4 || nonce[16:24].
"""

import base64
import hashlib
import hmac
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_SIZE = {"aes128-gcm96": 12, "aes256-gcm96": 12, "chacha20-poly1305": 12,
              "xchacha20-poly1305": 24}
KEY_SIZE = {"aes128-gcm96": 16, "aes256-gcm96": 32, "chacha20-poly1305": 32,
            "xchacha20-poly1305": 32}


def _rotl(v, c):
    return ((v << c) & 0xffffffff) | (v >> (32 - c))


def _qr(s, a, b, c, d):
    s[a] = (s[a] + s[b]) & 0xffffffff
    s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & 0xffffffff
    s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & 0xffffffff
    s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & 0xffffffff
    s[b] = _rotl(s[b] ^ s[c], 7)


def hchacha20(key, nonce16):
    assert len(key) == 32 and len(nonce16) == 16
    s = [0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]
    s += list(struct.unpack("<8I", key))
    s += list(struct.unpack("<4I", nonce16))
    for _ in range(10):
        _qr(s, 0, 4, 8, 12)
        _qr(s, 1, 5, 9, 13)
        _qr(s, 2, 6, 10, 14)
        _qr(s, 3, 7, 11, 15)
        _qr(s, 0, 5, 10, 15)
        _qr(s, 1, 6, 11, 12)
        _qr(s, 2, 7, 8, 13)
        _qr(s, 3, 4, 9, 14)
    return struct.pack("<8I", *(s[0:4] + s[12:16]))


def _aead(key_type, key, nonce):
    if key_type.startswith("aes"):
        return AESGCM(key), nonce
    if key_type == "chacha20-poly1305":
        return ChaCha20Poly1305(key), nonce
    if key_type == "xchacha20-poly1305":
        return ChaCha20Poly1305(hchacha20(key, nonce[:16])), b"\0" * 4 + nonce[16:]
    raise ValueError(key_type)


def seal(key_type, key, nonce, plaintext, ad=None):
    aead, n = _aead(key_type, key, nonce)
    return nonce + aead.encrypt(n, plaintext, ad or None)


def open_(key_type, key, payload, ad=None):
    ns = NONCE_SIZE[key_type]
    aead, n = _aead(key_type, key, payload[:ns])
    return aead.decrypt(n, payload[ns:], ad or None)


def hkdf(ikm, info, length):
    # empty salt == HashLen zero bytes (RFC 5869); cryptography uses that for salt=None
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(ikm)


def counter_kdf(master, context):
    # OpenBao's legacy KDF (sdk/helper/kdf CounterMode, HMAC-SHA256, 256 bits): one round
    return hmac.new(master, b"\0\0\0\0" + context + (256).to_bytes(4, "big"),
                    hashlib.sha256).digest()


def derived_key(key_type, master, context, kdf="hkdf"):
    if kdf == "counter":
        return counter_kdf(master, context)[:KEY_SIZE[key_type]]
    return hkdf(master, context, KEY_SIZE[key_type])


def convergent_ciphertext(key_type, master, context, plaintext, ad=None, version=1):
    n = KEY_SIZE[key_type]
    out = hkdf(master, context, n + 32)
    enc_key, nonce_key = out[:n], out[n:n + 32]
    nonce = hmac.new(nonce_key, plaintext, hashlib.sha256).digest()[:NONCE_SIZE[key_type]]
    payload = seal(key_type, enc_key, nonce, plaintext, ad)
    return "vault:v%d:%s" % (version, base64.b64encode(payload).decode())


def make_ciphertext(key_type, master, plaintext, nonce, context=None, ad=None, version=1,
                    kdf="hkdf"):
    key = derived_key(key_type, master, context, kdf) if context is not None else master
    payload = seal(key_type, key, nonce, plaintext, ad)
    return "vault:v%d:%s" % (version, base64.b64encode(payload).decode())


def decrypt_ciphertext(key_type, master, ciphertext, context=None, ad=None, kdf="hkdf"):
    payload = base64.b64decode(ciphertext.split(":", 2)[2])
    key = derived_key(key_type, master, context, kdf) if context is not None else master
    return open_(key_type, key, payload, ad)
