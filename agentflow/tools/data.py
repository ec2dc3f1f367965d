"""`sql_query`: one read-only query over a database whose DSN is a granted secret, named by the `database` argument.

The first keyword is checked (SELECT, WITH, EXPLAIN, VALUES, SHOW, an introspection PRAGMA) so a mistake gets a
clear answer, but the real guard is the connection: SQLite is opened read-only (`mode=ro`, `query_only`, an
authorizer refusing ATTACH and writes), PostgreSQL runs the query in a READ ONLY transaction with a
statement_timeout. The DSN never appears in a result or an error: it is a credential.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import decimal
import re
import sqlite3
import time
import uuid
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from agentflow.settings import Settings
from agentflow.tools.registry import Tool, ToolContext, ToolError
from agentflow.trust.egress import EgressDenied, EgressPolicy

MAX_ROWS = 1000
MAX_CELL_CHARS = 10_000
READ_KEYWORDS = frozenset({"select", "with", "explain", "values", "show", "pragma", "table"})
SQLITE_PRAGMAS = frozenset(
    {
        "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo", "foreign_key_list",
        "foreign_key_check", "database_list", "collation_list", "function_list", "module_list", "pragma_list",
        "compile_options", "integrity_check", "quick_check", "encoding",
    }
)  # fmt: skip
"""PRAGMAs that only report: the others (query_only, journal_mode...) could change the connection or the file."""
_TOKENS = re.compile(
    r"""--[^\n]*|/\*.*?(?:\*/|$)|'(?:[^']|'')*'?|"(?:[^"]|"")*"?|`[^`]*`?|\$(\w*)\$|;|[^\s;'"`$/-]+|.""", re.S
)


class SqlQueryArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="The NAME of the granted secret holding the database's DSN (e.g. ANALYTICS_DSN), never the DSN",
    )
    query: str = Field(min_length=1, max_length=100_000, description="One read-only SQL statement")
    params: list[Any] | dict[str, Any] | None = Field(
        None,
        description="Values bound to the query's placeholders (SQLite: ? or :name; PostgreSQL: %s or %(name)s)",
    )
    max_rows: int = Field(100, ge=1, le=MAX_ROWS, description="Return at most this many rows")
    timeout: float = Field(30.0, gt=0, le=300, description="Seconds the query may run")


def check_read_only(query: str, *, dialect: str) -> str:
    """Refuse anything but one statement that reads; returns the statement without a trailing `;`."""
    words: list[str] = []
    end = None
    dollar: str | None = None
    for match in _TOKENS.finditer(query):
        token = match.group(0)
        if dollar is not None:  # inside $tag$ ... $tag$ (PostgreSQL): nothing counts until the closing tag
            dollar = None if token == dollar else dollar
            continue
        if token.startswith(("--", "/*")) or token.isspace():
            continue
        if end is not None:
            raise ToolError("sql_query runs exactly one statement; send each statement in its own call")
        if token == ";":
            end = match.start()
        elif dialect == "postgresql" and match.group(1) is not None:
            dollar = token
        else:
            words.append(token)
    if not words:
        raise ToolError("the query is empty; give one SELECT (or WITH, EXPLAIN, VALUES, SHOW) statement")
    first = words[0].lower()
    if first not in READ_KEYWORDS:
        raise ToolError(
            f"sql_query only reads: a {first.upper()} statement is refused; use SELECT, WITH, EXPLAIN, VALUES or SHOW"
        )
    if first == "pragma":
        if dialect != "sqlite":
            raise ToolError("PRAGMA is SQLite's; this database is PostgreSQL: query pg_catalog or SHOW instead")
        rest = " ".join(words[1:])
        named = re.match(r"[\w.]+", rest)
        name = named.group(0).lower().rpartition(".")[2] if named else ""
        if name not in SQLITE_PRAGMAS or "=" in rest:
            raise ToolError(
                f"PRAGMA {name or '?'} is refused: only the introspection PRAGMAs are allowed "
                f"({', '.join(sorted(SQLITE_PRAGMAS))}), and never with '='"
            )
    return query[:end].strip() if end is not None else query.strip()


# --- results -------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= MAX_CELL_CHARS else value[:MAX_CELL_CHARS] + "…"
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(value)[:MAX_CELL_CHARS]).decode("ascii")}
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    return str(value)


def _result(columns: list[str], rows: list[Any], max_rows: int) -> dict[str, Any]:
    return {
        "columns": columns,
        "rows": [[_jsonable(value) for value in row] for row in rows[:max_rows]],
        "truncated": len(rows) > max_rows,
    }


# --- SQLite --------------------------------------------------------------------------------------

_SQLITE_WRITES = frozenset(
    getattr(sqlite3, name)
    for name in (
        "SQLITE_ATTACH", "SQLITE_DETACH", "SQLITE_INSERT", "SQLITE_UPDATE", "SQLITE_DELETE", "SQLITE_CREATE_INDEX",
        "SQLITE_CREATE_TABLE", "SQLITE_CREATE_TEMP_INDEX", "SQLITE_CREATE_TEMP_TABLE", "SQLITE_CREATE_TEMP_TRIGGER",
        "SQLITE_CREATE_TEMP_VIEW", "SQLITE_CREATE_TRIGGER", "SQLITE_CREATE_VIEW", "SQLITE_CREATE_VTABLE",
        "SQLITE_DROP_INDEX", "SQLITE_DROP_TABLE", "SQLITE_DROP_TEMP_INDEX", "SQLITE_DROP_TEMP_TABLE",
        "SQLITE_DROP_TEMP_TRIGGER", "SQLITE_DROP_TEMP_VIEW", "SQLITE_DROP_TRIGGER", "SQLITE_DROP_VIEW",
        "SQLITE_DROP_VTABLE", "SQLITE_ALTER_TABLE", "SQLITE_REINDEX", "SQLITE_ANALYZE", "SQLITE_TRANSACTION",
        "SQLITE_SAVEPOINT",
    )
)  # fmt: skip


def _authorize(action: int, first: str | None, *_: object) -> int:
    """The database-side guard: a write, an ATTACH or a reporting-only PRAGMA's opposite is denied by SQLite."""
    if action in _SQLITE_WRITES:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA and (first or "").lower() not in SQLITE_PRAGMAS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _sqlite_path(dsn: str) -> str:
    """`sqlite:///abs/path.db` (and SQLAlchemy's `sqlite:////abs/path.db`): always an absolute path."""
    path = unquote(urlsplit(dsn).path)
    if not path.strip("/"):
        raise ToolError("the SQLite DSN has no file path: write it as sqlite:///absolute/path/to/file.db")
    return "/" + path.lstrip("/")


def _run_sqlite(dsn: str, statement: str, args: SqlQueryArgs, name: str) -> dict[str, Any]:
    uri = f"file:{quote(_sqlite_path(dsn))}?mode=ro"
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=min(args.timeout, 5.0), check_same_thread=False)
    except sqlite3.Error:
        raise ToolError(
            f"cannot open the SQLite database named by secret {name}: the file does not exist or is not readable"
        ) from None
    deadline = time.monotonic() + args.timeout
    try:
        connection.execute("PRAGMA query_only = ON")
        connection.set_authorizer(_authorize)
        connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        cursor = connection.execute(statement, args.params if args.params is not None else ())
        rows = cursor.fetchmany(args.max_rows + 1)
        columns = [column[0] for column in cursor.description or ()]
    except sqlite3.Error as exc:
        raise ToolError(_sqlite_message(exc, args.timeout)) from None
    finally:
        connection.close()
    return _result(columns, rows, args.max_rows)


def _sqlite_message(exc: sqlite3.Error, timeout: float) -> str:
    text = str(exc)
    if text == "interrupted":
        return f"the query ran longer than {timeout:g} s and was stopped; narrow it or raise `timeout`"
    if "not authorized" in text or "readonly" in text or "read-only" in text:
        return f"the database refused the query ({text}): sql_query is read-only"
    return f"the query failed: {text}"


# --- PostgreSQL ----------------------------------------------------------------------------------


async def _run_postgres(dsn: str, statement: str, args: SqlQueryArgs, name: str, policy: EgressPolicy) -> Any:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        info = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise ToolError(
            f"the secret {name} is not a valid PostgreSQL DSN (postgresql://user:pass@host:5432/db)"
        ) from None
    host = str(info.get("host") or "")
    if not host or host.startswith("/") or "," in host:
        raise ToolError(f"the DSN in secret {name} must name one TCP host (postgresql://user:pass@host:5432/db)")
    port = int(str(info.get("port") or 5432))
    try:
        policy.check_host(host)
        address = (await policy.resolve(host, port))[0]
    except EgressDenied as exc:
        raise EgressDenied(f"sql_query to {exc.target}", exc.reason) from None
    info.update(hostaddr=str(address), connect_timeout=max(1, int(min(args.timeout, 30))))
    info.pop("options", None)  # a DSN's own options must not turn the read-only guard off
    secret_parts = [dsn, str(info.get("password") or "")]
    try:
        async with asyncio.timeout(args.timeout + 5):
            connection = await psycopg.AsyncConnection.connect(make_conninfo("", **info))
            async with connection:
                await connection.set_read_only(True)  # every transaction is BEGIN READ ONLY
                async with connection.transaction():
                    await connection.execute(f"SET LOCAL statement_timeout = {int(args.timeout * 1000)}")
                    columns, rows = await _fetch(connection, statement, args)
    except TimeoutError:
        raise ToolError(f"the database named by secret {name} did not answer within {args.timeout:g} s") from None
    except psycopg.OperationalError as exc:
        message = _scrub(str(exc).strip(), secret_parts)
        if "statement timeout" in message:
            raise ToolError(f"the query ran longer than {args.timeout:g} s and was stopped; narrow it") from None
        raise ToolError(f"cannot query the database named by secret {name}: {message}") from None
    except psycopg.Error as exc:
        message = _scrub(str(exc).strip(), secret_parts)
        if "read-only transaction" in message:
            raise ToolError(f"the database refused the query ({message}): sql_query is read-only") from None
        raise ToolError(f"the query failed: {message}") from None
    return _result(columns, rows, args.max_rows)


async def _fetch(connection: Any, statement: str, args: SqlQueryArgs) -> tuple[list[str], list[Any]]:
    """Both ways use the extended protocol, so the server itself refuses a second statement ("...; COMMIT;
    DELETE ..." would otherwise leave the read-only transaction)."""
    if _keyword(statement) in ("select", "with", "values", "table"):
        # A server-side cursor: only max_rows + 1 rows ever leave the server, however many the query matches.
        async with connection.cursor(name="agentflow_sql_query") as cursor:
            await cursor.execute(statement, args.params)
            rows = await cursor.fetchmany(args.max_rows + 1)
            return [column.name for column in cursor.description or ()], rows
    async with connection.pipeline() as pipeline:  # EXPLAIN, SHOW: short answers, and no cursor can hold them
        cursor = await connection.execute(statement, args.params)
        await pipeline.sync()
        rows = await cursor.fetchmany(args.max_rows + 1) if cursor.description else []
    return [column.name for column in cursor.description or ()], rows


def _keyword(statement: str) -> str:
    for match in _TOKENS.finditer(statement):
        token = match.group(0)
        if not (token.isspace() or token.startswith(("--", "/*"))):
            return token.lower()
    return ""


def _scrub(message: str, secret_parts: list[str]) -> str:
    for part in secret_parts:
        if part:
            message = message.replace(part, "***")
    return message


# --- the tool ------------------------------------------------------------------------------------


async def sql_query(args: SqlQueryArgs, context: ToolContext) -> dict[str, Any]:
    dsn = context.secret_value(args.database)
    scheme = dsn.partition("://")[0].lower() if "://" in dsn else ""
    if scheme == "sqlite":
        statement = check_read_only(args.query, dialect="sqlite")
        return await asyncio.to_thread(_run_sqlite, dsn, statement, args, args.database)
    if scheme in ("postgresql", "postgres"):
        statement = check_read_only(args.query, dialect="postgresql")
        policy = context.egress or EgressPolicy(hosts=None)
        return await _run_postgres(dsn, statement, args, args.database, policy)
    raise ToolError(
        f"the secret {args.database} does not hold a DSN sql_query knows: give sqlite:///absolute/path.db "
        "or postgresql://user:password@host:5432/database"
    )


def tools(settings: Settings) -> list[Tool]:
    return [
        Tool(
            name="sql_query",
            description=(
                "Run one read-only SQL query (SELECT, WITH, EXPLAIN, VALUES, SHOW) on the database whose DSN is the "
                "granted secret named by `database`. Bind values with `params`, never by writing them into the "
                f"query. Returns {{columns, rows, truncated}}, at most {MAX_ROWS} rows."
            ),
            args_model=SqlQueryArgs,
            fn=sql_query,
            network=True,
            secret_arguments=("database",),
        )
    ]
