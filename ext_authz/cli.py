"""The `ext-authz` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ext_authz import __version__
from ext_authz.log import configure
from ext_authz.policy.schema import CONTENT_ENCRYPTIONS, KEY_MANAGEMENT_ALGORITHMS
from ext_authz.supervisor import process_count


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ext-authz", description="External authorization server for Envoy."
    )
    parser.add_argument("--version", action="version", version=f"ext-authz {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve Envoy's Authorization and gRPC Health")
    serve.add_argument("--config", required=True, type=Path, help="the policy file")
    serve.add_argument(
        "--listen", default="0.0.0.0:9001", help="gRPC HOST:PORT, or off (default %(default)s)"
    )
    serve.add_argument(
        "--http-listen",
        help="HOST:PORT of the HTTP door for Envoy http_service, nginx, Caddy, Traefik (off)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=4,
        help="check threads (default 4: under the GIL more threads only add hand-offs)",
    )
    serve.add_argument(
        "--grace", type=float, default=10.0, help="seconds in-flight checks get on SIGTERM"
    )
    serve.add_argument(
        "--shutdown-delay",
        type=float,
        default=1.0,
        help="seconds to keep serving after SIGTERM while health says NOT_SERVING",
    )
    serve.add_argument("--metrics-listen", help="HOST:PORT for Prometheus /metrics (off)")
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate for the gRPC listener")
    serve.add_argument("--tls-key", type=Path, help="PEM private key for the gRPC listener")
    serve.add_argument(
        "--tls-client-ca", type=Path, help="PEM CA bundle: require client certificates (mTLS)"
    )
    serve.add_argument(
        "--reload-interval",
        type=float,
        default=2.0,
        help="seconds between checks of the policy and its files for changes (0: SIGHUP only)",
    )
    serve.add_argument(
        "--decision-log",
        choices=["all", "deny", "off"],
        default="all",
        help="decision lines: every decision, denials only, or none (default %(default)s)",
    )
    serve.add_argument(
        "--memo-size",
        type=int,
        default=10_000,
        help="allow answers remembered per token and route (0: off; default %(default)s)",
    )
    serve.add_argument(
        "--processes",
        type=process_count,
        default=1,
        help="serving processes sharing the ports (SO_REUSEPORT) under one supervisor; "
        "'auto': one per usable core (default %(default)s)",
    )
    serve.add_argument(
        "--otlp-endpoint",
        help="OTLP/HTTP base URL for traces, e.g. http://127.0.0.1:4318 (off; the "
        "OTEL_EXPORTER_OTLP_* variables also turn it on)",
    )
    serve.add_argument("--log-format", choices=["json", "text"], default="json")
    serve.add_argument("--log-level", default="info")

    check = commands.add_parser("check-config", help="validate a policy file")
    check.add_argument("config", type=Path)
    commands.add_parser("schema", help="print the JSON Schema of the policy file")

    explain = commands.add_parser(
        "explain", help="show the decision for one request and why (exit 0 allow, 1 deny)"
    )
    explain.add_argument("--config", required=True, type=Path)
    explain.add_argument("--method", default="GET")
    explain.add_argument("--path", required=True)
    explain.add_argument("--host", default="")
    explain.add_argument(
        "-H", "--header", action="append", default=[], help="'name: value' (repeatable)"
    )
    explain.add_argument(
        "--context", action="append", default=[], help="context extension 'key=value'"
    )
    source = explain.add_mutually_exclusive_group()
    source.add_argument("--token-file", type=Path, help="read the bearer token from a file")
    source.add_argument("--token-env", help="read the bearer token from this variable")
    source.add_argument("--token-stdin", action="store_true", help="read the token from stdin")
    explain.add_argument("--show-values", action="store_true", help="print injected header values")
    explain.add_argument("--fetch-timeout", type=float, default=10.0)

    health = commands.add_parser(
        "health", help="exit 0 when the server at --target reports SERVING (for probes)"
    )
    health.add_argument("--target", default="127.0.0.1:9001", help="HOST:PORT")
    health.add_argument("--timeout", type=float, default=3.0)
    health.add_argument("--service", default="", help="service name (default: the server)")

    keys = commands.add_parser("keys", help="issuers' key status, and our decryption keys (JWE)")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    status = key_commands.add_parser(
        "status", help="each issuer's keys: ids, age, last fetch, next refresh"
    )
    status.add_argument("--config", required=True, type=Path)
    status.add_argument("--timeout", type=float, default=60.0)
    gen = key_commands.add_parser(
        "generate", help="write a private JWKS and print its public half (to encrypt to us)"
    )
    gen.add_argument("--out", required=True, type=Path, help="private JWKS file to write")
    gen.add_argument("--alg", default="RSA-OAEP-256", choices=KEY_MANAGEMENT_ALGORITHMS)
    gen.add_argument("--kid", help="key id (default: random)")
    gen.add_argument("--curve", default="P-256", choices=["P-256", "P-384", "P-521", "X25519"])
    gen.add_argument("--rsa-bits", type=int, default=2048)
    gen.add_argument(
        "--enc",
        default="A256GCM",
        choices=CONTENT_ENCRYPTIONS,
        help="with --alg dir: the content encryption the key is for",
    )
    gen.add_argument("--append", action="store_true", help="add a key to an existing file")
    public = key_commands.add_parser("public", help="print the public half of a private JWKS")
    public.add_argument("file", type=Path)

    demo = commands.add_parser("demo", help="demo components (issuer, upstream, full stack)")
    demo.add_argument("component", choices=["run", "issuer", "upstream"])
    demo.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "serve" and args.listen == "off" and not args.http_listen:
        parser.error("--listen off needs --http-listen: nothing would serve checks")
    if args.command == "serve":
        from ext_authz.app import ServeOptions, serve

        configure(args.log_format, args.log_level, buffered=True)
        return serve(
            ServeOptions(
                config=args.config,
                listen=args.listen,
                workers=args.workers,
                grace=args.grace,
                shutdown_delay=args.shutdown_delay,
                metrics_listen=args.metrics_listen,
                tls_cert=args.tls_cert,
                tls_key=args.tls_key,
                tls_client_ca=args.tls_client_ca,
                reload_interval=args.reload_interval,
                decision_log=args.decision_log,
                memo_size=args.memo_size,
                processes=args.processes,
                otlp_endpoint=args.otlp_endpoint,
                http_listen=args.http_listen,
            )
        )
    if args.command == "check-config":
        return check_config(args.config)
    if args.command == "schema":
        import json

        from ext_authz.policy.schema import policy_json_schema

        print(json.dumps(policy_json_schema(), indent=2, sort_keys=True))
        return 0
    if args.command == "explain":
        return _explain(args)
    if args.command == "health":
        return health_check(args.target, args.timeout, args.service)
    if args.command == "keys":
        return _keys(args)
    if args.command == "demo":
        return _demo(args.component, args.args)
    return 2


def check_config(path: Path) -> int:
    from ext_authz.policy.loader import PolicyError, load_policy

    configure("text", "error")
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    print(f"{path}: ok ({len(policy.issuers)} issuers, {len(policy.routes)} routes)")
    return 0


def _explain(args: argparse.Namespace) -> int:
    import os

    from ext_authz.clock import SystemClock
    from ext_authz.explain import explain, parse_header_args
    from ext_authz.keys.manager import KeyManager
    from ext_authz.policy.loader import PolicyError, load_policy
    from ext_authz.request import RequestView

    configure("text", "error")
    try:
        policy = load_policy(args.config)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    try:
        headers = parse_header_args(args.header)
    except ValueError as exc:
        print(f"ext-authz explain: {exc}", file=sys.stderr)
        return 2
    token = None
    if args.token_file is not None:
        token = args.token_file.read_text(encoding="utf-8").strip()
    elif args.token_env is not None:
        token = os.environ.get(args.token_env, "").strip() or None
    elif args.token_stdin:
        token = sys.stdin.read().strip() or None
    if token is not None:
        headers["authorization"] = token if " " in token else f"Bearer {token}"
    context = dict(item.partition("=")[::2] for item in args.context)
    request = RequestView(
        method=args.method.upper(),
        path=args.path.split("?", 1)[0],
        host=args.host.lower(),
        headers=headers,
        context_extensions=context,
    )
    keys = KeyManager()
    keys.start(policy.key_sources)
    keys.wait_ready(args.fetch_timeout)
    try:
        result = explain(policy, keys, request, SystemClock(), show_values=args.show_values)
    finally:
        keys.stop()
    print(result.text(), end="")
    return 0 if result.allowed else 1


def health_check(target: str, timeout: float, service: str = "") -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
    except grpc.RpcError as exc:
        print(f"{target}: {exc.code().name}", file=sys.stderr)
        return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{target}: {name}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def _keys(args: argparse.Namespace) -> int:
    import json

    from ext_authz.keys.decryption_keys import DecryptionKeyError, load_decryption_keys
    from ext_authz.keys.generate import generate, public_jwks

    if args.keys_command == "status":
        from ext_authz.keys_status import keys_status

        return keys_status(args.config, timeout=args.timeout)
    try:
        if args.keys_command == "generate":
            public = generate(
                args.out,
                args.alg,
                kid=args.kid,
                curve=args.curve,
                rsa_bits=args.rsa_bits,
                enc=args.enc,
                append=args.append,
            )
            print(f"wrote {args.out} (private: keep it secret, mode 0600)", file=sys.stderr)
        else:
            load_decryption_keys(path=args.file)
            public = public_jwks(json.loads(args.file.read_text(encoding="utf-8")))
    except (OSError, ValueError, DecryptionKeyError) as exc:
        print(f"ext-authz keys: {exc}", file=sys.stderr)
        return 1
    if not public["keys"]:
        print("symmetric keys only: share them with the issuer out of band", file=sys.stderr)
    print(json.dumps(public, indent=2))
    return 0


def _demo(component: str, argv: list[str]) -> int:
    if component == "issuer":
        from ext_authz.demo import issuer

        return int(issuer.main(argv) or 0)
    if component == "upstream":
        from ext_authz.demo import upstream

        return int(upstream.main(argv) or 0)
    from ext_authz.demo import run

    return int(run.main(argv) or 0)
