"""``gen-durable web``: serve the dashboard on its own (needs the ``web`` extra)."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from gen_durable.cli import dsn_option, main, open_engine
from gen_durable.cli.worker import _load


def _policy(spec: str | None) -> Any:
    if spec is None:
        return None
    if ":" not in spec:
        raise click.BadParameter(f"{spec!r}: expected MODULE:FUNCTION", param_hint="--authorize")
    hook = _load(spec)
    if not callable(hook):
        raise click.BadParameter(f"{spec!r} is not callable", param_hint="--authorize")
    return hook


@main.command()
@dsn_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8300, show_default=True, type=click.IntRange(0, 65535), help="TCP port."
)
@click.option(
    "--import",
    "imports",
    multiple=True,
    metavar="MODULE",
    help="Import MODULE so that its classes' steps and settings are known (repeatable).",
)
@click.option(
    "--authorize",
    metavar="MODULE:FUNC",
    help="authorize(request, action, target) -> bool, asked before every page and action "
    "[default: pages from this host only, no action]; gen_durable.web:read_only allows "
    "every page and no action.",
)
@click.option("--url-prefix", default="", help="Serve under this path, e.g. /jobs.")
def web(
    dsn: str | None,
    host: str,
    port: int,
    imports: tuple[str, ...],
    authorize: str | None,
    url_prefix: str,
) -> None:
    """Serve the web dashboard (a WSGI app; for production, mount
    gen_durable.web.create_app in your WSGI server instead)."""
    try:
        from werkzeug.serving import make_server

        from gen_durable.web import create_app
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise click.ClickException(
            f"the dashboard needs the web extra: pip install 'gen_durable[web]' ({exc})"
        ) from exc
    if url_prefix and (not url_prefix.startswith("/") or url_prefix.endswith("/")):
        raise click.BadParameter("starts with / and does not end with /", param_hint="--url-prefix")
    if os.getcwd() not in sys.path:  # like `python -m`: the project's modules are importable
        sys.path.insert(0, os.getcwd())
    for module in imports:
        _load(module)
    hook = _policy(authorize)
    with open_engine(dsn) as engine:
        app = create_app(engine, authorize=hook, url_prefix=url_prefix)
        server = make_server(host, port, app, threaded=True)
        click.echo(f"gen_durable dashboard on http://{host}:{server.server_port}{url_prefix}/")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
