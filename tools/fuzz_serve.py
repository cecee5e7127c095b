"""A longer schemathesis run against a real fer-serve on 127.0.0.1 (CI runs a bounded one in
tests/test_serve.py).

    python tools/fuzz_serve.py                      # 500 examples per operation
    python tools/fuzz_serve.py --max-examples 2000 --seed 7

A fresh token is made for the run; the service's OpenAPI document is fetched with it and every
operation is fuzzed: no 5xx, answers (and error bodies) as the document says. Random bytes are
never a valid image, so schemathesis' "schema-valid data is accepted" check is left out.
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys

from fer_bench.serve import free_port, start_serve, stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    token, port = secrets.token_urlsafe(24), free_port()
    proc = start_serve([], port, env={"FER_SERVE_TOKEN": token})
    try:
        return subprocess.run(["schemathesis", "run", f"http://127.0.0.1:{port}/openapi.json",
                               "--header", f"Authorization: Bearer {token}", "--max-examples", str(args.max_examples),
                               "--seed", str(args.seed), "--exclude-checks", "positive_data_acceptance"], check=False).returncode
    finally:
        stop(proc)


if __name__ == "__main__":
    sys.exit(main())
