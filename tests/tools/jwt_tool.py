#!/usr/bin/env python3
"""Make keys and JWTs for the token login tests with PyJWT and cryptography (not besterd's code).

  jwt_tool.py keygen DIR                 -> DIR/{ed,ec,rsa}.key (private) and DIR/{ed,ec,rsa}.pem (public)
  jwt_tool.py jwks OUT KID PEM           -> a JWKS file with the RSA public key PEM as KID (RS256)
  jwt_tool.py mint JSON                  -> prints a token; JSON: {"alg", "key" (file), "claims",
                                            "headers" (optional)}; alg "none" needs no key;
                                            alg "HS256-raw" signs with the key file's bytes as they
                                            are (an RSA public key PEM as an HMAC secret)
"""
import base64
import hashlib
import hmac
import json
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def keygen(out):
    keys = {
        "ed": ed25519.Ed25519PrivateKey.generate(),
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }
    for name, key in keys.items():
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        with open(f"{out}/{name}.key", "wb") as f:
            f.write(private)
        with open(f"{out}/{name}.pem", "wb") as f:
            f.write(public)


def jwks(out, kid, pem):
    with open(pem, "rb") as f:
        public = serialization.load_pem_public_key(f.read())
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
    jwk.update({"kid": kid, "alg": "RS256", "use": "sig"})
    with open(out, "w") as f:
        json.dump({"keys": [jwk]}, f)


def mint(spec):
    alg, claims = spec["alg"], spec["claims"]
    headers = spec.get("headers") or {}
    if alg == "none":
        head = b64(json.dumps({"alg": "none", "typ": "JWT", **headers}).encode())
        body = b64(json.dumps(claims).encode())
        return f"{head}.{body}."
    with open(spec["key"], "rb") as f:
        key = f.read()
    if alg == "HS256-raw":
        head = b64(json.dumps({"alg": "HS256", "typ": "JWT", **headers}).encode())
        body = b64(json.dumps(claims).encode())
        tag = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{b64(tag)}"
    if alg == "HS256":
        key = key.rstrip(b"\r\n")
    return jwt.encode(claims, key, algorithm=alg, headers=headers or None)


def main():
    command = sys.argv[1]
    if command == "keygen":
        keygen(sys.argv[2])
    elif command == "jwks":
        jwks(sys.argv[2], sys.argv[3], sys.argv[4])
    elif command == "mint":
        print(mint(json.loads(sys.argv[2])))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
