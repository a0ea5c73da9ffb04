#!/usr/bin/env python3
"""Writes kat.txt, the envelope known-answer vectors, independently of the Rust code.

HKDF-SHA256 (RFC 5869) and HMAC-SHA256 come from Python's standard library (hmac,
hashlib); TDES-EDE3-CBC with PKCS#7 padding comes from the OpenSSL command line
(`openssl enc -des-ede3-cbc -K <key> -iv <iv>`, which pads with PKCS#7 by default).
The HKDF output and the tag are also checked against `openssl kdf … HKDF` and
`openssl mac … HMAC`.
The unit test `envelope::seal::tests::known_answers` seals the same inputs with the
Rust implementation and compares byte for byte.

    python3 tests/data/envelope/kat.py > tests/data/envelope/kat.txt
"""
import hashlib
import hmac
import struct
import subprocess

INFO = b"hnsecure envelope v1"


def hkdf_sha256(salt, ikm, info, length):
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def tdes_cbc(key, iv, plaintext):
    return subprocess.run(
        ["openssl", "enc", "-des-ede3-cbc", "-K", key.hex(), "-iv", iv.hex()],
        input=plaintext, capture_output=True, check=True,
    ).stdout


def openssl_hkdf(salt, ikm, info, length):
    out = subprocess.run(
        ["openssl", "kdf", "-keylen", str(length), "-kdfopt", "digest:SHA256",
         "-kdfopt", "hexkey:" + ikm.hex(), "-kdfopt", "hexsalt:" + salt.hex(),
         "-kdfopt", "hexinfo:" + info.hex(), "HKDF"],
        capture_output=True, check=True, text=True,
    ).stdout
    return bytes.fromhex(out.strip().replace(":", ""))


def openssl_hmac(key, data):
    out = subprocess.run(
        ["openssl", "mac", "-digest", "SHA256", "-macopt", "hexkey:" + key.hex(), "HMAC"],
        input=data, capture_output=True, check=True,
    ).stdout
    return bytes.fromhex(out.decode().strip())


def vector(name, master, key_id, facility, direction, timestamp_ms, nonce, reply_to, plaintext):
    okm = hkdf_sha256(nonce, master, INFO + bytes([direction]), 64)
    assert okm == openssl_hkdf(nonce, master, INFO + bytes([direction]), 64)
    tdes_key, iv, mac_key = okm[:24], okm[24:32], okm[32:]
    ciphertext = tdes_cbc(tdes_key, iv, plaintext)
    assert len(ciphertext) == (len(plaintext) // 8 + 1) * 8
    fac = facility.encode("ascii")
    body = (
        bytes([1, direction, len(fac)]) + fac
        + struct.pack(">IQ", key_id, timestamp_ms) + nonce + reply_to
        + struct.pack(">I", len(ciphertext)) + ciphertext
    )
    tag = hmac.new(mac_key, body, hashlib.sha256).digest()
    assert tag == openssl_hmac(mac_key, body)
    fields = [
        ("name", name),
        ("master_key", master.hex()),
        ("key_id", str(key_id)),
        ("facility", facility),
        ("direction", str(direction)),
        ("timestamp_ms", str(timestamp_ms)),
        ("nonce", nonce.hex()),
        ("reply_to", reply_to.hex()),
        ("plaintext", plaintext.hex()),
        ("tdes_key", tdes_key.hex()),
        ("iv", iv.hex()),
        ("mac_key", mac_key.hex()),
        ("ciphertext", ciphertext.hex()),
        ("tag", tag.hex()),
        ("sealed", (body + tag).hex()),
    ]
    return "\n".join(f"{k} = {v}" for k, v in fields) + "\n"


HEADER = """\
# Known-answer vectors for the hnsecure envelope, version 1 (src/envelope/mod.rs).
#
# Format: vectors separated by blank lines; each line `name = value`; `#` starts a
# comment line. Binary values are lower-case hex; key_id, direction (1 request,
# 2 response) and timestamp_ms are decimal; facility is the ASCII text itself.
#
# Inputs: master_key, key_id, facility, direction, timestamp_ms, nonce, reply_to,
# plaintext. Expected: the derived tdes_key, iv and mac_key (HKDF-SHA256, salt =
# nonce, info = "hnsecure envelope v1" + direction byte), the ciphertext
# (TDES-EDE3-CBC, PKCS#7), the tag (HMAC-SHA256 over every byte before it) and the
# whole sealed envelope.
#
# How it was checked: this file is written by kat.py beside it, independently of the
# Rust code: HKDF and HMAC by Python's standard library, each checked again against
# `openssl kdf … HKDF` and `openssl mac … HMAC`; TDES-EDE3-CBC by
# `openssl enc -des-ede3-cbc -K <tdes_key> -iv <iv>` (OpenSSL 3.0). The Rust unit test
# envelope::seal::tests::known_answers derives, seals and opens the same inputs and
# agrees byte for byte. To check the ciphertext by hand:
#   printf '%s' <plaintext> | xxd -r -p | openssl enc -des-ede3-cbc -K <tdes_key> -iv <iv> | xxd -p
"""

MASTER = bytes(range(0x00, 0x20))
REQ_NONCE = bytes.fromhex("8f1e2d3c4b5a69788796a5b4c3d2e1f0")
REQUEST = (
    b"MSH|^~\\&|HNWEB|VIHA|RAIGT-PRSN-DMGR|BC00001013|20170125122125|train96|R03|"
    b"20170125122125|D|2.4||\r"
    b"ZHD|20170125122125|^^00000010|HNAIADMINISTRATION||||2.4\r"
    b"PID||1234567890^^^BC^PH\r"
)
RESPONSE = (
    b"MSH|^~\\&|RAIGT-PRSN-DMGR|BC00001013|HNWEB|VIHA|20170125122126|train96|ACK|"
    b"20170125122125|D|2.4\r"
    b"MSA|AA|20170125122125|HJMB001ISUCCESSFULLY COMPLETED\r"
)

print(HEADER)
print(vector("request", MASTER, 42, "VIHA", 1, 1485375685000, REQ_NONCE, bytes(16), REQUEST))
print(vector("response", MASTER, 42, "VIHA", 2, 1485375686123,
             bytes.fromhex("0123456789abcdeffedcba9876543210"), REQ_NONCE, RESPONSE), end="")
