"""`medstream keys generate NAME`: make a CURVE key pair for a stage (or the supervisor)."""

from __future__ import annotations

import argparse

from .keys import generate_keypair


def _cmd_generate(args: argparse.Namespace) -> int:
    public, secret = generate_keypair(args.dir, args.name, force=args.force)
    print(f"public key {public} (give it to the peers)")
    print(f"secret key {secret} (mode 600: keep it on this host only)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="CURVE keys for encrypted, authenticated links")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    gen = keys_sub.add_parser("generate", help="write NAME.key and NAME.key_secret")
    gen.add_argument("name", help="key name: a stage id, or 'supervisor' for the stats channel")
    gen.add_argument("--dir", default="keys", help="folder for the key files")
    gen.add_argument("--force", action="store_true", help="replace an existing key pair")
    gen.set_defaults(func=_cmd_generate)
