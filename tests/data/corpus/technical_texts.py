# ruff: noqa: UP031 (texts keep the long lines of real code and logs)
"""Technical texts with no PII: code, traces, logs, configs and data formats.

Most texts contain no labelled span at all, so every finding in them is a
false positive. The `secrets_in_code` texts carry SECRET spans only. Values that
look like identifiers (digests, UUIDs, versions, timestamps, private and
public addresses in configs) are there on purpose.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterator

import pools

PYTHON_SERVICE = '''\
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

log = logging.getLogger(__name__)

MAX_RETRIES = 5
BACKOFF_MS = 250
SCHEMA_VERSION = "2.14.3"


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    created: datetime


def store(data: bytes, bucket: str = "artifacts-prod-eu-west-1") -> Blob:
    """Store `data` under its SHA-256 digest and return the blob record."""
    digest = hashlib.sha256(data).hexdigest()
    key = f"{digest[:2]}/{digest[2:4]}/{digest}"
    for attempt in range(1, MAX_RETRIES + 1):
        try:
            _put(bucket, key, data)
            break
        except TimeoutError:
            log.warning("put timed out", extra={"attempt": attempt, "key": key})
    return Blob(digest=digest, size=len(data), created=datetime.now(timezone.utc))


def parse_epoch(value: str) -> datetime:
    # 1717171717 is seconds, 1717171717123 is milliseconds
    number = int(value)
    if number > 10_000_000_000:
        number //= 1000
    return datetime.fromtimestamp(number, tz=timezone.utc)


assert parse_epoch("1700000000").year == 2023
assert parse_epoch("1700000000000").isoformat() == "2023-11-14T22:13:20+00:00"
'''

TYPESCRIPT_CLIENT = """\
import { createHash, randomUUID } from "node:crypto";

export interface RetryOptions {
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

const DEFAULTS: RetryOptions = { attempts: 4, baseDelayMs: 200, maxDelayMs: 15_000 };
const API_VERSION = "2024-06-01";
const USER_AGENT = `acme-sdk/3.12.0 node/${process.versions.node}`;

export async function withRetry<T>(fn: () => Promise<T>, opts = DEFAULTS): Promise<T> {
  let lastError: unknown;
  for (let i = 0; i < opts.attempts; i++) {
    try {
      return await fn();
    } catch (err) {
      lastError = err;
      const delay = Math.min(opts.maxDelayMs, opts.baseDelayMs * 2 ** i);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
  throw lastError;
}

export function requestId(): string {
  return randomUUID(); // e.g. 9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d
}

export function etag(body: string): string {
  return createHash("sha1").update(body).digest("hex"); // 40 hex chars
}

const MAX_SAFE = 9007199254740991;
const EPOCH_MS = 1718000000000;
console.log(new Date(EPOCH_MS).toISOString(), MAX_SAFE, API_VERSION, USER_AGENT);
"""

GO_HANDLER = """\
package server

import (
\t"context"
\t"encoding/json"
\t"net/http"
\t"time"

\t"github.com/google/uuid"
)

const (
\treadTimeout  = 15 * time.Second
\twriteTimeout = 30 * time.Second
\tmaxBodyBytes = 1 << 20 // 1048576
)

type healthResponse struct {
\tStatus    string `json:"status"`
\tVersion   string `json:"version"`
\tCommit    string `json:"commit"`
\tStartedAt int64  `json:"started_at"`
}

var (
\tversion = "v1.27.4"
\tcommit  = "3f9c2a1b7e5d4c8a9b0f1e2d3c4b5a6978e1f2a3"
\tstarted = time.Now().Unix()
)

func Health(w http.ResponseWriter, r *http.Request) {
\tctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
\tdefer cancel()
\t_ = ctx
\tw.Header().Set("X-Request-Id", uuid.NewString())
\tjson.NewEncoder(w).Encode(healthResponse{"ok", version, commit, started})
}

func NewServer(addr string) *http.Server {
\treturn &http.Server{Addr: addr, ReadTimeout: readTimeout, WriteTimeout: writeTimeout}
}

// ListenAndServe binds 0.0.0.0:8080 in containers and 127.0.0.1:8080 locally.
"""

JAVA_SERVICE = """\
package com.example.billing;

import java.math.BigDecimal;
import java.time.Instant;
import java.util.UUID;

public final class InvoiceService {
    private static final long SERIAL_VERSION = 4242424242L;
    private static final int MAX_LINES = 500;
    private static final String BUILD = "7.3.0.2291";

    private final InvoiceRepository repository;

    public InvoiceService(InvoiceRepository repository) {
        this.repository = repository;
    }

    public Invoice create(long accountId, BigDecimal amount) {
        if (amount.scale() > 2) {
            throw new IllegalArgumentException("amount has more than 2 decimals: " + amount);
        }
        Invoice invoice = new Invoice(UUID.randomUUID(), accountId, amount, Instant.now());
        repository.save(invoice);
        return invoice;
    }

    public static void main(String[] args) {
        long started = 1716239022L;
        long startedMillis = 1716239022417L;
        System.out.printf("build %s started %d (%d ms)%n", BUILD, started, startedMillis);
    }
}
"""

RUST_PARSER = """\
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MAGIC: u32 = 0x7f45_4c46;
const CHUNK: usize = 65_536;
pub const VERSION: &str = "0.18.2";

#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub magic: u32,
    pub flags: u16,
    pub checksum: [u8; 32],
}

pub fn parse_header(bytes: &[u8]) -> Result<Header, String> {
    if bytes.len() < 38 {
        return Err(format!("header too short: {} bytes", bytes.len()));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if magic != MAGIC {
        return Err(format!("bad magic {:#010x}", magic));
    }
    let mut checksum = [0u8; 32];
    checksum.copy_from_slice(&bytes[6..38]);
    Ok(Header { magic, flags: u16::from_le_bytes([bytes[4], bytes[5]]), checksum })
}

pub fn now_millis() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis()
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts() {
        let mut seen: HashMap<&str, u64> = HashMap::new();
        *seen.entry("2001:db8::1").or_default() += 1;
        assert_eq!(seen["2001:db8::1"], 1);
    }
}
"""

C_SOURCE = """\
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define RING_SIZE 4096
#define CRC32_POLY 0xEDB88320u

static uint32_t crc_table[256];

static void crc32_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (CRC32_POLY ^ (c >> 1)) : (c >> 1);
        crc_table[i] = c;
    }
}

uint32_t crc32(const uint8_t *buf, size_t len) {
    uint32_t c = 0xFFFFFFFFu;
    while (len--)
        c = crc_table[(c ^ *buf++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

int main(void) {
    crc32_init();
    const char *msg = "123456789";
    printf("crc32=%08x expected=cbf43926\\n", crc32((const uint8_t *)msg, strlen(msg)));
    printf("ring=%d page=%d\\n", RING_SIZE, 4096 * 16);
    return 0;
}
"""

SQL_MIGRATION = """\
-- migration 0042_orders_partitioning.sql
BEGIN;

CREATE TABLE orders_2024_06 PARTITION OF orders
    FOR VALUES FROM ('2024-06-01 00:00:00+00') TO ('2024-07-01 00:00:00+00');

CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_2024_06_customer_idx
    ON orders_2024_06 (customer_id, created_at DESC);

ALTER TABLE orders ADD COLUMN IF NOT EXISTS external_ref uuid DEFAULT gen_random_uuid();

INSERT INTO feature_flags (name, enabled, rollout_pct, updated_at)
VALUES ('new_checkout', true, 25, '2024-05-30T18:45:00+02:00'),
       ('legacy_export', false, 0, '2024-05-30T18:45:00+02:00');

SELECT date_trunc('hour', created_at) AS hour, count(*) AS n, sum(total_cents) / 100.0 AS revenue
FROM orders
WHERE created_at >= now() - interval '7 days'
  AND status IN ('paid', 'shipped')
GROUP BY 1
ORDER BY 1 DESC
LIMIT 168;

UPDATE schema_migrations SET version = 20240601123045, checksum = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
COMMIT;
"""

K8S_YAML = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: checkout-api
  namespace: payments
  labels:
    app.kubernetes.io/version: "4.2.1"
  annotations:
    deployment.kubernetes.io/revision: "117"
spec:
  replicas: 3
  selector:
    matchLabels:
      app: checkout-api
  template:
    metadata:
      labels:
        app: checkout-api
    spec:
      containers:
        - name: api
          image: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/checkout-api@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
          ports:
            - containerPort: 8080
          env:
            - name: DB_HOST
              value: 10.42.7.19
            - name: REDIS_URL
              value: redis://172.20.0.5:6379/0
            - name: OTEL_EXPORTER_OTLP_ENDPOINT
              value: http://192.168.49.2:4317
            - name: DB_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: checkout-db
                  key: password
          resources:
            limits:
              cpu: 500m
              memory: 512Mi
      dnsConfig:
        nameservers: [8.8.8.8, 1.1.1.1]
"""

COMPOSE_YAML = """\
version: "3.9"
services:
  db:
    image: postgres:16.3-alpine
    environment:
      POSTGRES_DB: app
      POSTGRES_USER: app
      POSTGRES_PASSWORD_FILE: /run/secrets/db_password
    ports:
      - "127.0.0.1:5432:5432"
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U app"]
      interval: 10s
      timeout: 5s
      retries: 5
  cache:
    image: redis:7.2.5
    command: ["redis-server", "--maxmemory", "268435456"]
  web:
    build: .
    depends_on: [db, cache]
    ports:
      - "8000:8000"
    networks:
      backend:
        ipv4_address: 172.28.1.10
networks:
  backend:
    ipam:
      config:
        - subnet: 172.28.0.0/16
          gateway: 172.28.0.1
"""

GITHUB_ACTIONS = """\
name: ci
on:
  push:
    branches: [main]
  pull_request:
jobs:
  test:
    runs-on: ubuntu-22.04
    strategy:
      matrix:
        python: ["3.11", "3.12"]
    steps:
      - uses: actions/checkout@b4ffde65f46336ab88eb53be808477a3936bae11 # v4.1.1
      - uses: actions/setup-python@0a5c61591373683505ea898e09a3ea4f39ef2b9c # v5.0.0
        with:
          python-version: ${{ matrix.python }}
      - run: pip install -r requirements.lock
      - run: pytest -q --timeout 120
      - name: upload coverage
        uses: codecov/codecov-action@e28ff129e5465c2c0dcc6f003fc735cb6ae0c673 # v4.5.0
        with:
          token: ${{ secrets.CODECOV_TOKEN }}
"""

TERRAFORM = """\
resource "aws_s3_bucket" "artifacts" {
  bucket = "acme-artifacts-prod-eu-west-1"
  tags = {
    CostCenter = "4410"
  }
}

resource "aws_iam_role_policy" "ci_read" {
  name = "ci-read-artifacts"
  role = "arn:aws:iam::123456789012:role/ci-runner"
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["s3:GetObject", "s3:ListBucket"]
      Resource = [
        "arn:aws:s3:::acme-artifacts-prod-eu-west-1",
        "arn:aws:s3:::acme-artifacts-prod-eu-west-1/*",
      ]
    }]
  })
}

resource "aws_security_group_rule" "office" {
  type              = "ingress"
  from_port         = 443
  to_port           = 443
  protocol          = "tcp"
  cidr_blocks       = ["203.0.113.0/24", "198.51.100.17/32"]
  security_group_id = "sg-0a1b2c3d4e5f67890"
}

data "aws_ami" "base" {
  owners = ["099720109477"]
  filter {
    name   = "image-id"
    values = ["ami-0c55b159cbfafe1f0"]
  }
}

output "queue" {
  value = "arn:aws:sqs:us-east-1:123456789012:orders-dlq"
}
# lambda: arn:aws:lambda:eu-central-1:210987654321:function:resize-images:42
# vpc-0f1e2d3c4b5a69788 subnet-07d5c9e3a1b2c3d4e i-0123456789abcdef0
"""

NGINX_CONF = """\
upstream app_servers {
    server 10.0.1.21:8000 max_fails=3 fail_timeout=30s;
    server 10.0.1.22:8000 max_fails=3 fail_timeout=30s;
    server 10.0.1.23:8000 backup;
    keepalive 64;
}

server {
    listen 443 ssl http2;
    listen [::]:443 ssl http2;
    server_name api.example.com;

    ssl_certificate     /etc/ssl/certs/api.example.com.pem;
    ssl_certificate_key /etc/ssl/private/api.example.com.key;
    ssl_protocols TLSv1.2 TLSv1.3;

    client_max_body_size 25m;
    proxy_read_timeout 300s;

    set_real_ip_from 173.245.48.0/20;
    set_real_ip_from 103.21.244.0/22;
    real_ip_header CF-Connecting-IP;

    location /healthz {
        allow 127.0.0.1;
        allow 10.0.0.0/8;
        deny all;
        return 200 "ok";
    }

    location / {
        proxy_pass http://app_servers;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
}
"""

PYTHON_TRACE = """\
Traceback (most recent call last):
  File "/srv/app/.venv/lib/python3.11/site-packages/aiohttp/web_protocol.py", line 452, in _handle_request
    resp = await request_handler(request)
  File "/srv/app/.venv/lib/python3.11/site-packages/aiohttp/web_app.py", line 543, in _handle
    resp = await handler(request)
  File "/srv/app/app/handlers/orders.py", line 88, in create_order
    order = await service.create(payload["items"], idempotency_key=key)
  File "/srv/app/app/services/orders.py", line 131, in create
    row = await self._db.fetchrow(INSERT_ORDER, *values)
  File "/srv/app/.venv/lib/python3.11/site-packages/asyncpg/pool.py", line 644, in fetchrow
    return await con.fetchrow(query, *args, timeout=timeout)
asyncpg.exceptions.UniqueViolationError: duplicate key value violates unique constraint "orders_idempotency_key_key"
DETAIL:  Key (idempotency_key)=(c9b1f0e2-7a4d-4e8b-9f3c-2d1e0a9b8c7d) already exists.
"""

JAVA_TRACE = """\
2024-06-11 14:02:33.918 ERROR 1 --- [nio-8080-exec-7] o.a.c.c.C.[.[.[/].[dispatcherServlet]    : Servlet.service() threw exception
java.lang.NullPointerException: Cannot invoke "com.example.billing.Invoice.getTotal()" because "invoice" is null
\tat com.example.billing.InvoiceService.finalize(InvoiceService.java:214) ~[billing-7.3.0.jar!/:7.3.0]
\tat com.example.billing.InvoiceController.close(InvoiceController.java:77) ~[billing-7.3.0.jar!/:7.3.0]
\tat jdk.internal.reflect.GeneratedMethodAccessor412.invoke(Unknown Source) ~[na:na]
\tat org.springframework.web.method.support.InvocableHandlerMethod.doInvoke(InvocableHandlerMethod.java:255) ~[spring-web-6.1.8.jar!/:6.1.8]
\tat org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:885) ~[spring-webmvc-6.1.8.jar!/:6.1.8]
\tat org.apache.tomcat.util.threads.ThreadPoolExecutor$Worker.run(ThreadPoolExecutor.java:659) ~[tomcat-embed-core-10.1.24.jar!/:na]
\tat java.base/java.lang.Thread.run(Thread.java:1583) ~[na:na]
Caused by: java.sql.SQLTransientConnectionException: HikariPool-1 - Connection is not available, request timed out after 30004ms (total=10, active=10, idle=0, waiting=3)
\tat com.zaxxer.hikari.pool.HikariPool.createTimeoutException(HikariPool.java:686) ~[HikariCP-5.1.0.jar!/:na]
\t... 48 common frames omitted
"""

NODE_TRACE = """\
node:internal/process/promises:289
            triggerUncaughtException(err, true /* fromPromise */);
            ^

Error: connect ECONNREFUSED 127.0.0.1:6379
    at TCPConnectWrap.afterConnect [as oncomplete] (node:net:1605:16) {
  errno: -111,
  code: 'ECONNREFUSED',
  syscall: 'connect',
  address: '127.0.0.1',
  port: 6379
}

Node.js v20.14.0
npm ERR! code ELIFECYCLE
npm ERR! errno 1
npm ERR! worker@2.8.1 start: `node dist/index.js`
npm ERR! A complete log of this run can be found in: /root/.npm/_logs/2024-06-12T08_15_42_117Z-debug-0.log
"""

GIT_DIFF = """\
diff --git a/src/retry.py b/src/retry.py
index 4b825dc..e69de29 100644
--- a/src/retry.py
+++ b/src/retry.py
@@ -12,11 +12,14 @@ from __future__ import annotations
 import random
 import time

-MAX_ATTEMPTS = 3
+MAX_ATTEMPTS = 5
+JITTER_SECONDS = 0.25


 def backoff(attempt: int) -> float:
-    return 2 ** attempt
+    base = min(30.0, 0.5 * 2 ** attempt)
+    return base + random.uniform(0, JITTER_SECONDS)
@@ -40,7 +43,7 @@ def call(fn, *args):
         try:
             return fn(*args)
         except ConnectionError:
-            time.sleep(1)
+            time.sleep(backoff(attempt))
     raise RuntimeError("gave up after %d attempts" % MAX_ATTEMPTS)
"""

GIT_LOG = """\
e83c5163316f89bfbde7d9ab23ca2e25604af290 Merge pull request #1187 from release/4.2
a94a8fe5ccb19ba61c4c0873d391e987982fbbd3 Bump urllib3 from 2.2.1 to 2.2.2
2fd4e1c67a2d28fced849ee1bb76e7391b93eb12 Fix race in cache eviction (refs 4.1.9)
de9f2c7fd25e1b3afad3e85a0bd17d9b100db4b3 Release 4.2.0
7c4a8d09ca3762af61e59520943dc26494f8941b Drop support for Python 3.8
3c363836cf4e16666669a25da280a1865c2f2874 Use monotonic clock for timeouts
v4.2.0 (tag: v4.2.0, origin/main) 2024-06-03T16:20:11+02:00
v4.1.9 2024-05-21T09:03:57-07:00
v4.1.8 2024-05-02T23:59:59Z
"""

DOCKERFILE = """\
# syntax=docker/dockerfile:1.7
FROM python:3.11.9-slim-bookworm@sha256:8c1d7a4f2b9e6d3c0a5f7e2b1d4c9a8f6e3b0d7c2a5f8e1b4d7c0a3f6e9b2d5c AS build
ARG PIP_VERSION=24.0
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements.lock .
RUN pip install --require-hashes -r requirements.lock
COPY . .
RUN python -m compileall -q .

FROM gcr.io/distroless/python3-debian12:nonroot
COPY --from=build /src /app
EXPOSE 8787
USER 65532:65532
HEALTHCHECK --interval=30s --timeout=3s CMD ["/app/healthcheck"]
ENTRYPOINT ["python", "-m", "sidecar"]
"""

REQUIREMENTS_LOCK = """\
aiohttp==3.9.5 \\
    --hash=sha256:0605cc2c0088fcaae79f01c913a38611ad09ba68ff482402d3410bf59039bfb8 \\
    --hash=sha256:0a158704edf0abcac8ac371fbb54044f3270bdbc93e254a82b6c82be1ef08f3c
attrs==23.2.0 \\
    --hash=sha256:99b87a485a5820b23b879f04c2305b44b951b502fd64be915879d77a7e8fc6f1
multidict==6.0.5 \\
    --hash=sha256:01265f5e40f5a17f8241d52656ed27192be03bfa8764d88e8220141d1e4b3876
yarl==1.9.4 \\
    --hash=sha256:008d3e808d03ef28542372d01057fd09168419cdc8f848efe2804f894ae03e51
numpy==1.26.4 ; python_version >= "3.9" \\
    --hash=sha256:03a8c78d01d9781b28a6989f6fa1bb2c4f2d51201cf99d3dd875df6fbd96b23b
"""

PACKAGE_LOCK = """\
{
  "name": "dashboard",
  "version": "3.4.0",
  "lockfileVersion": 3,
  "requires": true,
  "packages": {
    "node_modules/react": {
      "version": "18.3.1",
      "resolved": "https://registry.npmjs.org/react/-/react-18.3.1.tgz",
      "integrity": "sha512-wS+hAgJShR0KhEvPJArfuPVN1+Hz1t0Y6n5jLrGQbkb4urgPE/0Rve+1kMB1v/oWgHgm4WIcV+i7F2pTVj+2iQ==",
      "dependencies": { "loose-envify": "^1.1.0" }
    },
    "node_modules/semver": {
      "version": "7.6.2",
      "resolved": "https://registry.npmjs.org/semver/-/semver-7.6.2.tgz",
      "integrity": "sha512-FNAIBWCx9qcRhoHcgcJ0gvU7SN1lYU2ZXuSfl04bSC5OpvDHFyJCjdNHomPXxjQlCBU67YW64PzY7/VIEH7F2w==",
      "bin": { "semver": "bin/semver.js" },
      "engines": { "node": ">=10" }
    },
    "node_modules/typescript": {
      "version": "5.4.5",
      "dev": true,
      "license": "Apache-2.0"
    }
  }
}
"""

API_RESPONSE = """\
{
  "object": "list",
  "has_more": false,
  "data": [
    {
      "id": "evt_1PJ8fK2eZvKYlo2C0t8xWq3N",
      "type": "invoice.paid",
      "created": 1716239022,
      "api_version": "2024-04-10",
      "request": { "id": "req_8hT2Kq0Lz9wXyA", "idempotency_key": "5f0e7c2a-91b4-4d6e-8a3f-0b2c4d6e8f10" },
      "data": { "amount_paid": 129900, "currency": "eur", "period_end": 1718917422 }
    },
    {
      "id": "evt_1PJ8gA2eZvKYlo2CkQ1bR7mT",
      "type": "invoice.finalized",
      "created": 1716239080,
      "livemode": false,
      "data": { "amount_due": 4900, "currency": "usd", "lines": 3, "tax_rate": 0.19 }
    }
  ],
  "url": "/v1/events",
  "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
  "span_id": "00f067aa0ba902b7"
}
"""

PROMETHEUS = """\
# HELP http_request_duration_seconds Request latency.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{route="/v1/orders",le="0.005"} 2411
http_request_duration_seconds_bucket{route="/v1/orders",le="0.05"} 90233
http_request_duration_seconds_bucket{route="/v1/orders",le="0.5"} 102774
http_request_duration_seconds_bucket{route="/v1/orders",le="+Inf"} 102801
http_request_duration_seconds_sum{route="/v1/orders"} 3120.5521
http_request_duration_seconds_count{route="/v1/orders"} 102801
process_start_time_seconds 1.7162390224e+09
process_resident_memory_bytes 2.87309824e+08
go_info{version="go1.22.4"} 1
build_info{version="4.2.1",revision="de9f2c7fd25e",branch="main"} 1
node_network_receive_bytes_total{device="eth0"} 8.2144553121e+10
"""

BASH_SCRIPT = """\
#!/usr/bin/env bash
set -euo pipefail

VERSION="${1:-2.31.0}"
ARCH="$(uname -m)"
SHA256="b5bb9d8014a0f9b1d61e21e796d78dccdf1352f23cd32812f4850b878ae4944c"
TARBALL="tool-${VERSION}-linux-${ARCH}.tar.gz"

echo "installing tool ${VERSION} for ${ARCH}"
echo "${SHA256}  ${TARBALL}" | sha256sum --check --status || { echo "checksum mismatch" >&2; exit 1; }
tar -xzf "${TARBALL}" -C /usr/local/bin
for port in 8080 8443 9090; do
  if ss -ltn "sport = :${port}" | grep -q LISTEN; then
    echo "port ${port} already in use" >&2
  fi
done
ip route add 10.96.0.0/12 via 192.168.1.1 dev eth0 || true
date -u -d @1717171717 +%Y-%m-%dT%H:%M:%SZ
"""

CHANGELOG = """\
# Changelog

## 4.2.1 - 2024-06-10
- Fix a memory leak in the connection pool introduced in 4.2.0.
- Raise the default timeout from 30 s to 60 s.

## 4.2.0 - 2024-06-03
- Support Python 3.12; drop 3.8.
- New `--max-body` option (default 1048576 bytes).
- Windows builds now target 10.0.19041.0 and later (tested on 10.0.22631.3737).

## 4.1.9 - 2024-05-21
- Pin grpcio to 1.64.0; protobuf 4.25.3 required.
- Docker image digest: sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae

## 4.1.8 - 2024-05-02
- Security: bump openssl to 3.0.13 (CVE-2024-0727).
- Build 2024.05.02.1 replaces 2024.04.30.3.
"""

CSV_METRICS_HEADER = "timestamp_ms,host,region,p50_ms,p99_ms,errors,version\n"


def _sha256(rng: random.Random) -> str:
    return hashlib.sha256(rng.randbytes(16)).hexdigest()


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(bytes=rng.randbytes(16), version=4))


def _private_ip(rng: random.Random) -> str:
    return rng.choice(
        (
            f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            f"172.{rng.randrange(16, 32)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        )
    )


def _iso(rng: random.Random, epoch: int) -> str:
    hours, minutes = divmod(rng.choice((0, 60, 120, -300, -420, 330)), 60)
    seconds = epoch % 86400
    day = 1 + (epoch // 86400) % 28
    offset = (
        "Z"
        if hours == minutes == 0
        else f"{'+' if hours >= 0 else '-'}{abs(hours):02d}:{minutes:02d}"
    )
    return (
        f"2024-06-{day:02d}T{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
        f".{rng.randrange(1000):03d}{offset}"
    )


def service_log(rng: random.Random, lines: int) -> str:
    """Lines of a service log with request ids, digests, durations and private addresses."""
    epoch = 1717200000 + rng.randrange(86400)
    out = []
    for _ in range(lines):
        epoch += rng.randrange(1, 90)
        level = rng.choice(("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"))
        message = rng.choice(
            (
                f"GET /v1/orders/{rng.randrange(10**5, 10**6)} 200 {rng.randrange(2, 900)}ms "
                f"upstream={_private_ip(rng)}:8080",
                f"cache miss key=blob:{_sha256(rng)[:16]} size={rng.randrange(1, 10**7)}",
                f"job {_uuid(rng)} finished in {rng.randrange(1, 60000)} ms retries={rng.randrange(4)}",
                f"deployed revision {_sha256(rng)[:40]} version=v{rng.randrange(1, 9)}."
                f"{rng.randrange(30)}.{rng.randrange(20)}",
                f"connection from {_private_ip(rng)}:{rng.randrange(30000, 65000)} closed "
                f"after {rng.randrange(1, 3600)}s",
                f"scheduled batch at {epoch * 1000 + rng.randrange(1000)} (ts={epoch})",
                f"pid={rng.randrange(100, 65000)} rss={rng.randrange(10**7, 10**9)} "
                f"gc_pause_us={rng.randrange(10, 90000)}",
                f"upload digest=sha256:{_sha256(rng)} bytes={rng.randrange(10**3, 10**8)}",
                f"rate limit bucket=tenant-{rng.randrange(1000, 9999)} remaining="
                f"{rng.randrange(0, 600)} reset={epoch + 60}",
            )
        )
        out.append(
            f"{_iso(rng, epoch)} {level:<5} [{rng.choice(('api', 'worker', 'cron'))}] {message}"
        )
    return "\n".join(out) + "\n"


def syslog(rng: random.Random, lines: int) -> str:
    """Lines in syslog format from kernel, sshd-free daemons and systemd."""
    out = []
    for index in range(lines):
        second = 10 + index * 7 % 50
        message = rng.choice(
            (
                f"kernel: [{rng.randrange(10**5, 10**6)}.{rng.randrange(10**6):06d}] "
                f"eth0: renamed from veth{rng.randrange(16**7, 16**8):x}",
                f"systemd[1]: Started session-{rng.randrange(1000, 9999)}.scope.",
                f'dockerd[{rng.randrange(500, 2000)}]: time="2024-06-12T08:15:{second:02d}.'
                f'{rng.randrange(10**9):09d}Z" level=info msg="ignoring event" '
                f"container={_sha256(rng)[:64]}",
                f"containerd[{rng.randrange(500, 2000)}]: shim disconnected id={_sha256(rng)[:12]}",
                f"CRON[{rng.randrange(10000, 99999)}]: (root) CMD (/usr/lib/sa/sa1 1 1)",
                f"dhclient[{rng.randrange(300, 900)}]: bound to {_private_ip(rng)} -- renewal in "
                f"{rng.randrange(1000, 43200)} seconds.",
            )
        )
        out.append(f"Jun 12 08:15:{second:02d} ip-10-0-1-{rng.randrange(2, 250)} {message}")
    return "\n".join(out) + "\n"


def metrics_csv(rng: random.Random, rows: int) -> str:
    """A CSV export of latency metrics keyed by millisecond timestamps."""
    epoch_ms = 1717200000000 + rng.randrange(10**7)
    lines = [CSV_METRICS_HEADER.rstrip("\n")]
    for _ in range(rows):
        epoch_ms += 60000
        lines.append(
            f"{epoch_ms},{_private_ip(rng)},{rng.choice(('eu-west-1', 'us-east-1', 'ap-south-1'))},"
            f"{rng.randrange(2, 40)},{rng.randrange(40, 2000)},{rng.randrange(0, 12)},"
            f"{rng.randrange(1, 5)}.{rng.randrange(20)}.{rng.randrange(10)}.{rng.randrange(1000, 9999)}"
        )
    return "\n".join(lines) + "\n"


def events_jsonl(rng: random.Random, rows: int) -> str:
    """Audit-style JSON events with UUIDs, hashes and epoch seconds, no personal data."""
    lines = []
    epoch = 1717300000 + rng.randrange(10**5)
    for _ in range(rows):
        epoch += rng.randrange(1, 300)
        lines.append(
            '{"event_id":"%s","ts":%d,"ts_ms":%d,"kind":"%s","object":"%s","etag":"%s",'
            '"schema":"%d.%d.%d","shard":%d}'
            % (
                _uuid(rng),
                epoch,
                epoch * 1000 + rng.randrange(1000),
                rng.choice(("object.created", "object.deleted", "acl.changed")),
                f"s3://acme-data-lake/raw/{epoch // 86400}/{_sha256(rng)[:20]}.parquet",
                _sha256(rng)[:32],
                rng.randrange(1, 4),
                rng.randrange(20),
                rng.randrange(10),
                rng.randrange(64),
            )
        )
    return "\n".join(lines) + "\n"


def aws_cli_output(rng: random.Random, items: int) -> str:
    """`aws ec2 describe-instances`-like text output with resource ids and ARNs."""
    lines = []
    for _ in range(items):
        account = rng.choice(("123456789012", "210987654321", "444455556666"))
        region = rng.choice(("us-east-1", "eu-west-1", "ap-southeast-2"))
        lines.append(
            f"INSTANCES\ti-{rng.randbytes(8).hex()[:17]}\tm6i.large\t{_private_ip(rng)}\t"
            f"arn:aws:iam::{account}:instance-profile/app-{rng.randrange(100)}\t"
            f"vol-{rng.randbytes(9).hex()[:17]}\tami-{rng.randbytes(9).hex()[:17]}\t"
            f"arn:aws:kms:{region}:{account}:key/{_uuid(rng)}"
        )
    return "\n".join(lines) + "\n"


def secrets_in_code(rng: random.Random) -> list[tuple[str, str]]:
    """Code and configs with credentials in them; only the credentials are labelled."""

    def secret(make: str) -> str:
        maker, _ = pools.OTHER_SLOTS[make]
        return f"⟦SECRET={maker(rng)}⟧"

    pem_body = "\n    ".join(pools._token(rng, pools.ALNUM + "+/", 64) for _ in range(6))
    return [
        (
            "settings_py",
            'import os\n\nDEBUG = False\nALLOWED_HOSTS = ["api.example.com", "10.0.3.7"]\n'
            f'AWS_ACCESS_KEY_ID = "{secret("aws_key")}"\n'
            f'AWS_SECRET_ACCESS_KEY = "{secret("aws_secret")}"\n'
            'AWS_REGION = "eu-west-1"\nCACHE_TTL = 3600\nBUILD = "2024.06.12.3"\n',
        ),
        (
            "env_file",
            "NODE_ENV=production\nPORT=3000\n"
            f"STRIPE_SECRET_KEY={secret('stripe_key')}\n"
            f"GITHUB_TOKEN={secret('github_token')}\n"
            f"SLACK_BOT_TOKEN={secret('slack_token')}\n"
            "REDIS_URL=redis://10.0.5.12:6379\nSENTRY_RELEASE=3f9c2a1b7e5d\n",
        ),
        (
            "js_client",
            "const client = new OpenAI({\n"
            f'  apiKey: "{secret("openai_key")}",\n'
            "  timeout: 60_000,\n  maxRetries: 2,\n});\n"
            "const started = 1718000000000;\n",
        ),
        (
            "db_url_go",
            'package db\n\nconst dsn = "postgres://reporting:'
            f'{secret("url_password")}@10.20.30.40:5432/warehouse?sslmode=require"\n'
            "const poolSize = 16\n",
        ),
        (
            "curl_jwt",
            "curl -sS https://api.example.com/v2/reports \\\n"
            f"  -H 'Authorization: Bearer {secret('jwt')}' \\\n"
            "  -H 'X-Request-Id: 7d444840-9dc0-11d1-b245-5ffdce74fad2' \\\n"
            '  --data \'{"from":1717171717,"to":1717258117}\'\n',
        ),
        (
            "pem_key",
            "tls:\n  cert_file: /etc/tls/tls.crt\n  key: |\n"
            "    ⟦SECRET=-----BEGIN RSA PRIVATE KEY-----\n    "
            + pem_body
            + "\n    -----END RSA PRIVATE KEY-----⟧\n"
            '  min_version: "1.2"\n',
        ),
        (
            "python_requests",
            'import requests\n\nHEADERS = {"X-Api-Key": "'
            f'{secret("api_key")}"}}\n'
            'resp = requests.get("https://weather.example.org/v1/forecast", headers=HEADERS, '
            "timeout=10)\nresp.raise_for_status()\n",
        ),
        (
            "terraform_vars",
            'region = "us-east-1"\ninstance_type = "t3.medium"\n'
            f'db_password = "{secret("password")}"\n'
            'vpc_cidr = "10.50.0.0/16"\n',
        ),
    ]


HANDWRITTEN = {
    "source_code": {
        "python_service": PYTHON_SERVICE,
        "typescript_client": TYPESCRIPT_CLIENT,
        "go_handler": GO_HANDLER,
        "java_service": JAVA_SERVICE,
        "rust_parser": RUST_PARSER,
        "c_crc32": C_SOURCE,
        "bash_install": BASH_SCRIPT,
    },
    "sql": {"migration": SQL_MIGRATION},
    "config": {
        "k8s_deployment": K8S_YAML,
        "docker_compose": COMPOSE_YAML,
        "github_actions": GITHUB_ACTIONS,
        "terraform_aws": TERRAFORM,
        "nginx": NGINX_CONF,
        "dockerfile": DOCKERFILE,
        "requirements_lock": REQUIREMENTS_LOCK,
        "package_lock": PACKAGE_LOCK,
    },
    "stack_trace": {"python": PYTHON_TRACE, "java": JAVA_TRACE, "node": NODE_TRACE},
    "vcs": {"diff": GIT_DIFF, "git_log": GIT_LOG, "changelog": CHANGELOG},
    "data": {"api_response": API_RESPONSE, "prometheus": PROMETHEUS},
}


def all_texts(rng: random.Random) -> Iterator[tuple[str, str, str]]:
    """Yield (category, id, marked text) for every technical text."""
    for category, texts in HANDWRITTEN.items():
        for identifier, text in texts.items():
            yield category, identifier, text
    for index in range(6):
        yield "log", f"service-{index}", service_log(rng, 18)
    for index in range(3):
        yield "log", f"syslog-{index}", syslog(rng, 12)
    for index in range(3):
        yield "data", f"metrics_csv-{index}", metrics_csv(rng, 20)
    for index in range(3):
        yield "data", f"events_jsonl-{index}", events_jsonl(rng, 8)
    for index in range(2):
        yield "config", f"aws_cli-{index}", aws_cli_output(rng, 8)
    for identifier, text in secrets_in_code(rng):
        yield "secrets_in_code", identifier, text
