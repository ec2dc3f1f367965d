"""The file tools: read_file, write_file, list_files, read_csv and read_pdf, inside the workflow's own workspace.

A path is relative to the workspace (AGENTFLOW_HOME/workspaces/<workflow>/). Every component is opened from its
parent's descriptor with O_NOFOLLOW, so an absolute path, a `..` or a symlink (one a code node left there, or one
swapped in between two calls) can never lead outside: there is no check-then-open on a path string to race.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import csv
import errno
import fnmatch
import io
import itertools
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentflow.settings import Settings
from agentflow.tools.registry import Tool, ToolContext, ToolError

WORKSPACE_QUOTA_BYTES = 100 * 2**20
"""The most a workspace may hold in total; write_file refuses to grow it past this."""
MAX_READ_BYTES = 2**20
MAX_WRITE_BYTES = 10 * 2**20
MAX_LIST_ENTRIES = 1000
MAX_CSV_ROWS = 1000
MAX_PDF_BYTES = 20 * 2**20
MAX_PDF_PAGES = 200
MAX_PDF_CHARS = 500_000
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # O_NONBLOCK: a FIFO must not hang the call
_PATH = Field(description="A path relative to the workflow's workspace, e.g. reports/2026-01.md")


# --- confinement ---------------------------------------------------------------------------------


def _parts(path: str) -> list[str]:
    """The components of a workspace-relative path; absolute paths and `..` are refused before anything opens."""
    if "\0" in path:
        raise ToolError(f"path {path!r} contains a NUL character")
    if path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":"):
        raise ToolError(f"path {path!r} is absolute; give a path relative to the workflow's workspace")
    parts = [part for part in path.replace("\\", "/").split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ToolError(f"path {path!r} uses '..'; file tools reach only the workflow's workspace")
    return parts


@contextlib.contextmanager
def _workspace(context: ToolContext) -> Iterator[int]:
    """A descriptor of the workspace directory, created (0700) on first use."""
    if context.workspace is None:
        raise ToolError("file tools need a workflow workspace: run them in a workflow (agentflow run FILE)")
    root = Path(context.workspace)
    root.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700)
    try:
        fd = os.open(root, _DIRECTORY)
    except OSError as exc:
        raise ToolError(f"the workflow's workspace cannot be opened: {exc.strerror}") from None
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _directory(root: int, parts: list[str], shown: str, *, create: bool = False) -> Iterator[int]:
    """Walk `parts` from the workspace one component at a time, never following a symlink."""
    fd = os.dup(root)
    try:
        for part in parts:
            try:
                child = os.open(part, _DIRECTORY, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise ToolError(f"{shown} does not exist in the workspace; list_files shows what does") from None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=fd)
                child = os.open(part, _DIRECTORY, dir_fd=fd)
            except OSError as exc:
                raise _refusal(exc, shown) from None
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _refusal(exc: OSError, shown: str) -> ToolError:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return ToolError(f"{shown} goes through a symlink or a file; file tools never follow links")
    if exc.errno == errno.EISDIR:
        return ToolError(f"{shown} is a directory; list_files lists it")
    return ToolError(f"{shown}: {exc.strerror}")


def _open_file(root: int, path: str) -> int:
    """A read descriptor of a regular file inside the workspace."""
    parts = _parts(path)
    if not parts:
        raise ToolError("give the path of a file in the workspace")
    with _directory(root, parts[:-1], path) as parent:
        try:
            fd = os.open(parts[-1], _READ, dir_fd=parent)
        except FileNotFoundError:
            raise ToolError(f"{path} does not exist in the workspace; list_files shows what does") from None
        except OSError as exc:
            raise _refusal(exc, path) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ToolError(
            f"{path} is a directory; list_files lists it" if stat.S_ISDIR(mode) else f"{path} is not a regular file"
        )
    os.set_blocking(fd, True)
    return fd


def _read_bytes(root: int, path: str, limit: int) -> tuple[bytes, int]:
    """At most `limit` bytes of a file, and its size."""
    fd = _open_file(root, path)
    with os.fdopen(fd, "rb") as file:
        return file.read(limit), os.fstat(file.fileno()).st_size


def workspace_bytes(root: int) -> int:
    """What the workspace holds, counting symlinks as themselves (never what they point at)."""
    total = 0
    for _dir, _dirs, files, dir_fd in os.fwalk(".", dir_fd=root, follow_symlinks=False):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_size
    return total


# --- read_file / write_file / list_files ---------------------------------------------------------


class ReadFileArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = _PATH
    max_bytes: int = Field(100_000, ge=1, le=MAX_READ_BYTES, description="Read at most this many bytes")


def _read_file(root: int, args: ReadFileArgs) -> dict[str, Any]:
    raw, size = _read_bytes(root, args.path, args.max_bytes)
    truncated = size > len(raw)
    try:  # an incremental decoder: a cut in the middle of a character is not an error
        text = codecs.getincrementaldecoder("utf-8")().decode(raw, final=not truncated)
    except UnicodeDecodeError:
        raise ToolError(f"{args.path} is not UTF-8 text; read_pdf reads PDFs and read_csv CSV files") from None
    return {"path": args.path, "content": text, "size": size, **({"truncated": True} if truncated else {})}


class WriteFileArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = _PATH
    content: str = Field(description="The text to write (UTF-8)")
    append: bool = Field(False, description="Add to the end of the file instead of replacing it")


def _write_file(root: int, args: WriteFileArgs) -> dict[str, Any]:
    data = args.content.encode()
    if len(data) > MAX_WRITE_BYTES:
        raise ToolError(f"content is {len(data)} bytes; write_file writes at most {MAX_WRITE_BYTES} bytes per call")
    parts = _parts(args.path)
    if not parts:
        raise ToolError("give the path of a file in the workspace")
    with _directory(root, parts[:-1], args.path, create=True) as parent:
        name = parts[-1]
        try:
            existing = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if existing is not None and not stat.S_ISREG(existing.st_mode):
            raise ToolError(
                f"{args.path} exists and is not a regular file (a directory or a link); choose another path"
            )
        kept = existing.st_size if existing is not None and args.append else 0
        replaced = existing.st_size if existing is not None else 0
        total = workspace_bytes(root) - replaced + kept + len(data)
        if total > WORKSPACE_QUOTA_BYTES:
            raise ToolError(
                f"writing {args.path} would grow the workspace to {total} bytes, past its quota of "
                f"{WORKSPACE_QUOTA_BYTES} bytes; delete files the workflow no longer needs"
            )
        if args.append and existing is not None:
            fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
            with os.fdopen(fd, "wb") as file:
                if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                    raise ToolError(f"{args.path} is not a regular file")
                file.write(data)
        else:
            _replace(parent, name, data)
        size = os.stat(name, dir_fd=parent, follow_symlinks=False).st_size
    return {"path": args.path, "bytes_written": len(data), "size": size}


def _replace(parent: int, name: str, data: bytes) -> None:
    """Write a new file beside the old one and rename it over: a reader never sees half a file, and a symlink put
    in its place is replaced, not followed."""
    temporary = f".{name}.{secrets.token_hex(6)}.partial"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.rename(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=parent)
        raise


class ListFilesArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(".", description="A directory relative to the workspace ('.' is the workspace itself)")
    pattern: str | None = Field(None, description="A glob on the relative path, e.g. *.csv or reports/*.md")
    recursive: bool = Field(False, description="Also list what subdirectories hold")
    max_entries: int = Field(200, ge=1, le=MAX_LIST_ENTRIES, description="List at most this many entries")


def _list_files(root: int, args: ListFilesArgs) -> dict[str, Any]:
    parts = _parts(args.path)
    entries: list[dict[str, Any]] = []
    truncated = False
    with _directory(root, parts, args.path) as start:
        pending: list[tuple[int, str]] = [(os.dup(start), "/".join(parts))]
        try:
            while pending and not truncated:
                fd, prefix = pending.pop(0)
                try:
                    with os.scandir(fd) as scan:
                        found = sorted(scan, key=lambda entry: entry.name)
                    for entry in found:
                        relative = f"{prefix}/{entry.name}" if prefix else entry.name
                        kind = _kind(entry)
                        if args.recursive and kind == "directory":
                            with contextlib.suppress(OSError):  # vanished or swapped for a link: not descended
                                pending.append((os.open(entry.name, _DIRECTORY, dir_fd=fd), relative))
                        if (entry.name.startswith(".") and entry.name.endswith(".partial")) or (
                            args.pattern and not _matches(relative, args.pattern)
                        ):
                            continue
                        if len(entries) == args.max_entries:
                            truncated = True
                            break
                        size = entry.stat(follow_symlinks=False).st_size if kind == "file" else None
                        entries.append({"path": relative, "type": kind, **({"size": size} if kind == "file" else {})})
                finally:
                    os.close(fd)
        finally:
            for fd, _prefix in pending:
                os.close(fd)
    return {"entries": entries, **({"truncated": True} if truncated else {})}


def _kind(entry: os.DirEntry[str]) -> str:
    if entry.is_symlink():
        return "symlink"
    if entry.is_dir(follow_symlinks=False):
        return "directory"
    return "file" if entry.is_file(follow_symlinks=False) else "other"


def _matches(relative: str, pattern: str) -> bool:
    """`*.csv` matches a name at any depth; a pattern with a `/` matches the whole relative path."""
    return fnmatch.fnmatchcase(relative if "/" in pattern else relative.rsplit("/", 1)[-1], pattern)


# --- read_csv / read_pdf -------------------------------------------------------------------------


class ReadCsvArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = _PATH
    delimiter: str | None = Field(None, min_length=1, max_length=1, description="Guessed from the file when omitted")
    header: bool | None = Field(None, description="Whether the first row names the columns; guessed when omitted")
    max_rows: int = Field(100, ge=0, le=MAX_CSV_ROWS, description="Return at most this many rows")


def _read_csv(root: int, args: ReadCsvArgs) -> dict[str, Any]:
    fd = _open_file(root, args.path)
    with os.fdopen(fd, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        try:
            sample = text.read(64 * 1024)
            text.seek(0)
            delimiter, header = _sniff(sample, args)
            reader = csv.reader(text, delimiter=delimiter)
            first = next(reader, None)
            if first is None:
                return {"columns": [], "rows": [], "total_rows": 0}
            columns = first if header else [f"column_{index}" for index in range(1, len(first) + 1)]
            rows: list[dict[str, Any]] = []
            total = 0
            for row in reader if header else itertools.chain([first], reader):
                total += 1
                if len(rows) < args.max_rows:
                    rows.append(_row(columns, row))
        except UnicodeDecodeError:
            raise ToolError(f"{args.path} is not UTF-8 text; save the CSV as UTF-8") from None
        except csv.Error as exc:
            raise ToolError(f"{args.path} is not valid CSV (line {reader.line_num}): {exc}") from None
    return {"columns": columns, "rows": rows, "total_rows": total, **({"truncated": True} if total > len(rows) else {})}


def _sniff(sample: str, args: ReadCsvArgs) -> tuple[str, bool]:
    delimiter = args.delimiter
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    header = args.header
    if header is None:
        try:
            header = csv.Sniffer().has_header(sample)
        except csv.Error:
            header = True
    return delimiter, header


def _row(columns: list[str], values: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {
        column: values[index] if index < len(values) else None for index, column in enumerate(columns)
    }
    if len(values) > len(columns):
        row["_extra"] = values[len(columns) :]
    return row


class ReadPdfArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = _PATH
    first_page: int = Field(1, ge=1, description="The first page to read (1 is the first)")
    max_pages: int = Field(20, ge=1, le=MAX_PDF_PAGES, description="Read at most this many pages")
    max_chars: int = Field(50_000, ge=1, le=MAX_PDF_CHARS, description="Return at most this many characters")


def _read_pdf(root: int, args: ReadPdfArgs) -> dict[str, Any]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError, PyPdfError

    raw, size = _read_bytes(root, args.path, MAX_PDF_BYTES + 1)
    if size > MAX_PDF_BYTES:
        raise ToolError(f"{args.path} is {size} bytes; read_pdf reads PDFs of at most {MAX_PDF_BYTES} bytes")
    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ToolError(
                f"{args.path} is encrypted with a password; read_pdf does not decrypt PDFs: save an unencrypted copy"
            )
        count = len(reader.pages)
        if args.first_page > count:
            raise ToolError(f"{args.path} has {count} pages; first_page {args.first_page} is past its end")
        last = min(count, args.first_page + args.max_pages - 1)
        pages: list[dict[str, Any]] = []
        left, cut = args.max_chars, False
        for number in range(args.first_page, last + 1):
            text = reader.pages[number - 1].extract_text() or ""
            pages.append({"page": number, "text": text[:left]})
            left -= min(len(text), left)
            cut = len(text) > len(pages[-1]["text"])
            if cut or left == 0:
                break
    except ToolError:
        raise
    except (PdfReadError, PyPdfError, ValueError, KeyError, TypeError) as exc:
        raise ToolError(f"{args.path} is not a readable PDF: {exc}") from None
    truncated = cut or pages[-1]["page"] < count
    return {"pages": pages, "page_count": count, **({"truncated": True} if truncated else {})}


# --- the tools -----------------------------------------------------------------------------------


def _tool(name: str, description: str, args_model: type[BaseModel], body: Any) -> Tool:
    async def run(args: Any, context: ToolContext) -> Any:
        def in_workspace() -> Any:
            with _workspace(context) as root:
                return body(root, args)

        return await asyncio.to_thread(in_workspace)

    return Tool(name=name, description=description, args_model=args_model, fn=run)


_CONFINED = "Paths are relative to the workflow's workspace; absolute paths, '..' and symlinks are refused."


def tools(settings: Settings) -> list[Tool]:
    return [
        _tool(
            "read_file",
            f"Read a UTF-8 text file. Returns {{path, content, size}}. {_CONFINED}",
            ReadFileArgs,
            _read_file,
        ),
        _tool(
            "write_file",
            f"Write (or append to) a UTF-8 text file, creating its directories. {_CONFINED} "
            f"The workspace holds at most {WORKSPACE_QUOTA_BYTES // 2**20} MB.",
            WriteFileArgs,
            _write_file,
        ),
        _tool(
            "list_files",
            f"List a directory of the workspace: entries {{path, type, size}}, optionally recursive and filtered by "
            f"a glob. {_CONFINED}",
            ListFilesArgs,
            _list_files,
        ),
        _tool(
            "read_csv",
            "Read a CSV file of the workspace: the delimiter and header are guessed unless given. Returns "
            f"{{columns, rows (one object per row), total_rows}}. {_CONFINED}",
            ReadCsvArgs,
            _read_csv,
        ),
        _tool(
            "read_pdf",
            f"Extract the text of a PDF file of the workspace, page by page. Returns {{pages: [{{page, text}}], "
            f"page_count}}. {_CONFINED}",
            ReadPdfArgs,
            _read_pdf,
        ),
    ]
