"""The floor for the overhead benchmark: a bare aiohttp loop that creates the users of a sheet, nothing else.

    python bench/bare_loop.py SHEET.csv --url URL --customer ID [--concurrency 16] [--token sandbox]

It sends what `bulkonboard run` sends for each row (the same JSON body, the same Partner Center headers, one
MS-RequestId per row) with the same number of requests in flight, and reads each answer's JSON. No validation,
no pacing, no retries, no journal, no results workbook: what is left is the HTTP work itself, so the pipeline's
throughput divided by this one is what the rest of bulkonboard costs. Prints one line of figures; exits 1 if any
create was not answered 200 (the comparison would be meaningless).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import time
import uuid

import aiohttp


def bodies(path: str) -> list[bytes]:
    """One create body per row, as the client builds it (`partnercenter._create_body`)."""
    out = []
    with open(path, encoding="utf-8-sig", newline="") as handle:
        for record in csv.DictReader(handle):
            body: dict[str, object] = {"userPrincipalName": record["userPrincipalName"]}
            for name in ("firstName", "lastName"):
                if record.get(name):
                    body[name] = record[name]
            body["displayName"] = record["displayName"]
            body["usageLocation"] = record["usageLocation"].upper()
            body["passwordProfile"] = {
                "password": record["password"],
                "forceChangePassword": record.get("forceChangePassword", "TRUE").upper() != "FALSE",
            }
            body["attributes"] = {"objectType": "CustomerUser"}
            out.append(json.dumps(body, ensure_ascii=False).encode("utf-8"))
    return out


async def create_all(url: str, customer: str, token: str, payloads: list[bytes], concurrency: int) -> int:
    target = f"{url.rstrip('/')}/v1/customers/{customer}/users"
    correlation = str(uuid.uuid4())
    queue = iter(payloads)
    failures = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        for payload in queue:
            headers = {
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "Content-Type": "application/json",
                "MS-RequestId": str(uuid.uuid4()),
                "MS-CorrelationId": correlation,
                "MS-Contract-Version": "v1",
                "MS-PartnerCenter-Application": "bulkonboard",
                "X-Locale": "en-US",
            }
            async with session.post(target, data=payload, headers=headers, allow_redirects=False) as response:
                answer = await response.json()
                if response.status != 200 or not answer.get("id"):
                    failures += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sheet")
    parser.add_argument("--url", required=True)
    parser.add_argument("--customer", required=True)
    parser.add_argument("--token", default="sandbox")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    payloads = bodies(args.sheet)
    started = time.perf_counter()
    failures = asyncio.run(create_all(args.url, args.customer, args.token, payloads, args.concurrency))
    seconds = time.perf_counter() - started
    print(f"created {len(payloads) - failures} of {len(payloads)} in {seconds:.2f} s "
          f"({len(payloads) / seconds:,.0f}/s)")  # fmt: skip
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
