#!/usr/bin/env bash
# Throw-away certificates for trying mutual TLS (and for `make bench`):
#   scripts/dev-certs.sh DIR
# writes DIR/ca.pem, DIR/server.{pem,key} (for 127.0.0.1 and localhost),
# DIR/client.{pem,key} and DIR/client-bundle.pem (HAProxy's `crt`).
# Never use them in production.
set -euo pipefail
dir=${1:?usage: scripts/dev-certs.sh DIR}
mkdir -p "$dir" && cd "$dir"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 30 -subj /CN=spoa-dev-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' > server.ext
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' > client.ext
for name in server client; do
    openssl req "${ec[@]}" -keyout $name.key -out $name.csr -subj /CN=$name 2>/dev/null
    openssl x509 -req -in $name.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $name.pem \
        -days 30 -extfile $name.ext 2>/dev/null
done
cat client.pem client.key > client-bundle.pem
echo "certificates in $dir"
