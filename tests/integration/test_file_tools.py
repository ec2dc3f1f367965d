"""read_file, write_file, list_files, read_csv and read_pdf on real files, confined to the workflow's workspace."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

from agentflow.runtime import AgentFlow
from agentflow.tools import files
from agentflow.tools.registry import ToolContext, ToolError, builtin_registry
from tests.integration.helpers import node_statuses, run_source, workflow

pytestmark = pytest.mark.store_agnostic

TOOLS = builtin_registry(operator=False)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "home" / "workspaces" / "inbox"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "outside" / "passwd"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0\n")
    return secret


async def call(workspace: Path | None, name: str, **arguments: Any) -> Any:
    return await TOOLS.get(name).call(arguments, ToolContext(workflow="inbox", workspace=workspace))


def make_pdf(pages: list[str], *, password: str | None = None) -> bytes:
    """A PDF whose pages carry the given text (Helvetica), optionally encrypted."""
    writer = PdfWriter()
    font = writer._add_object(
        DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
    )
    for text in pages:
        page = writer.add_blank_page(612, 792)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
        content = DecodedStreamObject()
        content.set_data(f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode())
        page[NameObject("/Contents")] = writer._add_object(content)
    if password is not None:
        writer.encrypt(user_password=password, owner_password="owner-pass", algorithm="AES-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


# --- the registry --------------------------------------------------------------------------------


def test_file_tools_are_registered_as_grantable_local_tools() -> None:
    for name in ("read_file", "write_file", "list_files", "read_csv", "read_pdf"):
        tool = TOOLS.get(name)
        assert (tool.pure, tool.network, tool.secret_arguments) == (False, False, ())
        assert tool.capability() == f"tool {name}"
        assert tool.parameters_schema()["additionalProperties"] is False


async def test_without_a_workspace_the_tools_say_they_need_one() -> None:
    with pytest.raises(ToolError, match="file tools need a workflow workspace"):
        await call(None, "read_file", path="notes.txt")


# --- write, read, list ---------------------------------------------------------------------------


async def test_write_then_read_creates_the_workspace_private(workspace: Path) -> None:
    written = await call(workspace, "write_file", path="reports/2026/jan.md", content="# January\nsales up\n")
    assert written == {"path": "reports/2026/jan.md", "bytes_written": 19, "size": 19}
    assert stat.S_IMODE(workspace.stat().st_mode) == 0o700
    assert (workspace / "reports" / "2026" / "jan.md").read_text() == "# January\nsales up\n"
    read = await call(workspace, "read_file", path="reports/2026/jan.md")
    assert read == {"path": "reports/2026/jan.md", "content": "# January\nsales up\n", "size": 19}


async def test_append_adds_to_the_end(workspace: Path) -> None:
    await call(workspace, "write_file", path="log.txt", content="one\n")
    appended = await call(workspace, "write_file", path="log.txt", content="two\n", append=True)
    assert appended["size"] == 8
    assert (await call(workspace, "read_file", path="./log.txt"))["content"] == "one\ntwo\n"


async def test_overwrite_replaces_and_leaves_no_partial_file(workspace: Path) -> None:
    await call(workspace, "write_file", path="a.txt", content="first version")
    await call(workspace, "write_file", path="a.txt", content="second")
    assert sorted(os.listdir(workspace)) == ["a.txt"]
    assert (workspace / "a.txt").read_text() == "second"


async def test_read_is_bounded_and_cuts_between_characters(workspace: Path) -> None:
    await call(workspace, "write_file", path="big.txt", content="é" * 100)  # 200 bytes
    read = await call(workspace, "read_file", path="big.txt", max_bytes=11)
    assert read == {"path": "big.txt", "content": "é" * 5, "size": 200, "truncated": True}
    with pytest.raises(ToolError, match="max_bytes: Input should be less than or equal to 1048576"):
        await call(workspace, "read_file", path="big.txt", max_bytes=10**9)


async def test_binary_and_missing_files_get_clear_errors(workspace: Path) -> None:
    workspace.mkdir(parents=True)
    (workspace / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ToolError, match=r"image.png is not UTF-8 text; read_pdf reads PDFs"):
        await call(workspace, "read_file", path="image.png")
    with pytest.raises(ToolError, match=r"nothing.txt does not exist in the workspace; list_files shows what does"):
        await call(workspace, "read_file", path="nothing.txt")
    (workspace / "folder").mkdir()
    with pytest.raises(ToolError, match="folder is a directory; list_files lists it"):
        await call(workspace, "read_file", path="folder")
    with pytest.raises(ToolError, match="exists and is not a regular file"):
        await call(workspace, "write_file", path="folder", content="x")


async def test_a_fifo_is_refused_without_hanging(workspace: Path) -> None:
    workspace.mkdir(parents=True)
    os.mkfifo(workspace / "pipe")
    with pytest.raises(ToolError, match="pipe is not a regular file"):
        await call(workspace, "read_file", path="pipe")


async def test_list_files_recursive_with_a_glob(workspace: Path) -> None:
    await call(workspace, "write_file", path="data/a.csv", content="x\n1\n")
    await call(workspace, "write_file", path="data/deep/b.csv", content="x\n")
    await call(workspace, "write_file", path="notes.md", content="n")
    flat = await call(workspace, "list_files")
    assert flat == {"entries": [{"path": "data", "type": "directory"}, {"path": "notes.md", "type": "file", "size": 1}]}
    csvs = await call(workspace, "list_files", recursive=True, pattern="*.csv")
    assert [entry["path"] for entry in csvs["entries"]] == ["data/a.csv", "data/deep/b.csv"]
    assert csvs["entries"][0]["size"] == 4
    scoped = await call(workspace, "list_files", path="data", pattern="data/*.csv")
    assert [entry["path"] for entry in scoped["entries"]] == ["data/a.csv"]
    capped = await call(workspace, "list_files", recursive=True, max_entries=2)
    assert len(capped["entries"]) == 2 and capped["truncated"] is True


async def test_list_files_shows_a_symlink_but_never_descends_it(workspace: Path, outside: Path) -> None:
    workspace.mkdir(parents=True)
    (workspace / "escape").symlink_to(outside.parent)
    listed = await call(workspace, "list_files", recursive=True)
    assert listed == {"entries": [{"path": "escape", "type": "symlink"}]}


# --- escapes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/etc/passwd", "is absolute; give a path relative to the workflow's workspace"),
        ("../../outside/passwd", "uses '..'; file tools reach only the workflow's workspace"),
        ("reports/../../x", "uses '..'"),
        ("C:\\Windows\\win.ini", "is absolute"),
        ("a\0b", "contains a NUL character"),
    ],
)
@pytest.mark.parametrize("tool", ["read_file", "write_file", "read_csv", "read_pdf", "list_files"])
async def test_paths_out_of_the_workspace_are_refused(workspace: Path, path: str, message: str, tool: str) -> None:
    arguments: dict[str, Any] = {"path": path}
    if tool == "write_file":
        arguments["content"] = "pwned"
    with pytest.raises(ToolError, match=message.replace("(", r"\(").replace(")", r"\)")):
        await call(workspace, tool, **arguments)


async def test_a_symlinked_file_is_never_followed(workspace: Path, outside: Path) -> None:
    workspace.mkdir(parents=True)
    (workspace / "passwd").symlink_to(outside)
    for tool in ("read_file", "read_csv", "read_pdf"):
        with pytest.raises(ToolError, match="goes through a symlink or a file; file tools never follow links"):
            await call(workspace, tool, path="passwd")
    with pytest.raises(ToolError, match="passwd exists and is not a regular file"):
        await call(workspace, "write_file", path="passwd", content="pwned", append=True)
    assert outside.read_text() == "root:x:0:0\n"


async def test_a_symlinked_directory_is_never_followed(workspace: Path, outside: Path) -> None:
    workspace.mkdir(parents=True)
    (workspace / "etc").symlink_to(outside.parent)
    with pytest.raises(ToolError, match="etc/passwd goes through a symlink"):
        await call(workspace, "read_file", path="etc/passwd")
    with pytest.raises(ToolError, match=r"etc/new.txt goes through a symlink"):
        await call(workspace, "write_file", path="etc/new.txt", content="x")
    with pytest.raises(ToolError, match="etc goes through a symlink"):
        await call(workspace, "list_files", path="etc")
    assert sorted(os.listdir(outside.parent)) == ["passwd"]


async def test_a_directory_swapped_for_a_symlink_after_use_is_refused(workspace: Path, outside: Path) -> None:
    """Nothing is checked once and trusted later: each call walks the path again from the workspace."""
    await call(workspace, "write_file", path="inbox/passwd", content="mine")
    assert (await call(workspace, "read_file", path="inbox/passwd"))["content"] == "mine"
    (workspace / "inbox" / "passwd").unlink()
    (workspace / "inbox").rmdir()
    (workspace / "inbox").symlink_to(outside.parent)
    with pytest.raises(ToolError, match="inbox/passwd goes through a symlink"):
        await call(workspace, "read_file", path="inbox/passwd")
    with pytest.raises(ToolError, match="inbox/passwd goes through a symlink"):
        await call(workspace, "write_file", path="inbox/passwd", content="pwned")
    assert outside.read_text() == "root:x:0:0\n"


async def test_the_quota_caps_the_whole_workspace(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "WORKSPACE_QUOTA_BYTES", 100)
    await call(workspace, "write_file", path="a.txt", content="a" * 60)
    with pytest.raises(ToolError, match="would grow the workspace to 110 bytes, past its quota of 100 bytes"):
        await call(workspace, "write_file", path="b.txt", content="b" * 50)
    assert not (workspace / "b.txt").exists()
    await call(workspace, "write_file", path="a.txt", content="a" * 90)  # replacing counts the new size only
    with pytest.raises(ToolError, match="past its quota"):
        await call(workspace, "write_file", path="a.txt", content="a" * 11, append=True)


async def test_one_write_is_bounded(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "MAX_WRITE_BYTES", 10)
    with pytest.raises(ToolError, match="content is 11 bytes; write_file writes at most 10 bytes per call"):
        await call(workspace, "write_file", path="a.txt", content="x" * 11)


async def test_bad_arguments_are_named(workspace: Path) -> None:
    with pytest.raises(ToolError, match="invalid arguments for tool 'write_file': content: Field required"):
        await call(workspace, "write_file", path="a.txt")
    with pytest.raises(ToolError, match="url: Extra inputs are not permitted"):
        await call(workspace, "read_csv", url="https://example.com/a.csv")
    with pytest.raises(ToolError, match="give the path of a file in the workspace"):
        await call(workspace, "read_file", path=".")


# --- read_csv ------------------------------------------------------------------------------------


async def test_read_csv_sniffs_the_delimiter_and_header(workspace: Path) -> None:
    workspace.mkdir(parents=True)
    (workspace / "sales.csv").write_text("region;amount;month\nnorth;120;jan\nsouth;80;jan\neast;95;feb\n")
    result = await call(workspace, "read_csv", path="sales.csv", max_rows=2)
    assert result == {
        "columns": ["region", "amount", "month"],
        "rows": [
            {"region": "north", "amount": "120", "month": "jan"},
            {"region": "south", "amount": "80", "month": "jan"},
        ],
        "total_rows": 3,
        "truncated": True,
    }


async def test_read_csv_without_a_header_and_ragged_rows(workspace: Path) -> None:
    workspace.mkdir(parents=True)
    (workspace / "raw.csv").write_bytes("\ufeff1,2\n3,4,5\n6\n".encode())
    result = await call(workspace, "read_csv", path="raw.csv", header=False, delimiter=",")
    assert result == {
        "columns": ["column_1", "column_2"],
        "rows": [
            {"column_1": "1", "column_2": "2"},
            {"column_1": "3", "column_2": "4", "_extra": ["5"]},
            {"column_1": "6", "column_2": None},
        ],
        "total_rows": 3,
    }


async def test_read_csv_quoted_fields_and_errors(workspace: Path) -> None:
    workspace.mkdir(parents=True)
    (workspace / "q.csv").write_text('name,note\n"Smith, J","said ""hi"""\n')
    result = await call(workspace, "read_csv", path="q.csv")
    assert result["rows"] == [{"name": "Smith, J", "note": 'said "hi"'}]
    (workspace / "latin1.csv").write_bytes("name\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ToolError, match=r"latin1.csv is not UTF-8 text; save the CSV as UTF-8"):
        await call(workspace, "read_csv", path="latin1.csv")
    (workspace / "empty.csv").write_text("")
    assert await call(workspace, "read_csv", path="empty.csv") == {"columns": [], "rows": [], "total_rows": 0}


# --- read_pdf ------------------------------------------------------------------------------------


async def test_read_pdf_gives_text_per_page(workspace: Path) -> None:
    workspace.mkdir(parents=True)
    (workspace / "invoice.pdf").write_bytes(make_pdf(["Invoice 42", "Total 99 EUR", "Thank you"]))
    result = await call(workspace, "read_pdf", path="invoice.pdf")
    assert result == {
        "pages": [
            {"page": 1, "text": "Invoice 42"},
            {"page": 2, "text": "Total 99 EUR"},
            {"page": 3, "text": "Thank you"},
        ],
        "page_count": 3,
    }
    later = await call(workspace, "read_pdf", path="invoice.pdf", first_page=2, max_pages=1)
    assert later == {"pages": [{"page": 2, "text": "Total 99 EUR"}], "page_count": 3, "truncated": True}
    cut = await call(workspace, "read_pdf", path="invoice.pdf", max_chars=14)
    assert cut == {
        "pages": [{"page": 1, "text": "Invoice 42"}, {"page": 2, "text": "Tota"}],
        "page_count": 3,
        "truncated": True,
    }
    with pytest.raises(ToolError, match=r"invoice.pdf has 3 pages; first_page 9 is past its end"):
        await call(workspace, "read_pdf", path="invoice.pdf", first_page=9)


async def test_read_pdf_encrypted_and_broken_files(workspace: Path) -> None:
    workspace.mkdir(parents=True)
    (workspace / "locked.pdf").write_bytes(make_pdf(["Confidential"], password="s3cret"))
    with pytest.raises(ToolError, match=r"locked.pdf is encrypted with a password; read_pdf does not decrypt PDFs"):
        await call(workspace, "read_pdf", path="locked.pdf")
    (workspace / "owner-only.pdf").write_bytes(make_pdf(["Printable"], password=""))
    assert (await call(workspace, "read_pdf", path="owner-only.pdf"))["pages"] == [{"page": 1, "text": "Printable"}]
    (workspace / "fake.pdf").write_text("this is not a pdf")
    with pytest.raises(ToolError, match=r"fake.pdf is not a readable PDF"):
        await call(workspace, "read_pdf", path="fake.pdf")


async def test_read_pdf_refuses_an_oversized_file(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "MAX_PDF_BYTES", 100)
    workspace.mkdir(parents=True)
    (workspace / "big.pdf").write_bytes(make_pdf(["x"]))
    with pytest.raises(ToolError, match=r"big.pdf is \d+ bytes; read_pdf reads PDFs of at most 100 bytes"):
        await call(workspace, "read_pdf", path="big.pdf")


# --- in a workflow run ---------------------------------------------------------------------------


async def test_a_workflow_writes_and_reads_its_own_workspace(flow: AgentFlow, home: Path) -> None:
    source = workflow(
        "notes",
        """
        nodes:
          save: {type: tool, tool: write_file, args: {path: "out/today.md", content: "- ship it"}}
          load: {type: tool, tool: read_file, needs: [save], args: {path: "out/today.md"}}
          escape: {type: tool, tool: read_file, needs: [load], args: {path: "../other/secret.txt"}}
        outputs:
          text: "{{ load.content }}"
        """,
    )
    run = await run_source(flow, source)
    assert run.status == "failed" and "uses '..'" in (run.error or "")
    assert (home / "workspaces" / "notes" / "out" / "today.md").read_text() == "- ship it"
    assert node_statuses(flow, run.id)["load"] == ["succeeded"]
