"""The command-line scheme of docs/cli.md, checked against the binary: every subcommand that
`shardrank --help` lists (a new one is covered at once) has exactly the flags docs/cli.md gives
it, the shared names carry the documented defaults, old spellings still work without showing in
`--help`, and the documented behaviour holds — negative numbers are values, a mistyped command is
named, a usage error shows its own command's usage, the exit statuses, and `route` names the shard
whose Lookup finds an id (a real 2-shard table set, two shards and a coordinator on loopback).
The tables are parsed out of docs/cli.md, so the page and this test cannot drift apart."""
import json
import os
import re
import socket
import subprocess

import pytest

from conftest import ROOT, shardrank_bin
from tables_support import build, shard_of, write_input

CLI_MD = os.path.join(ROOT, "docs", "cli.md")
ALWAYS = {"--help", "--version"}


def run(*args, timeout=30):
    return subprocess.run([shardrank_bin(), *[str(a) for a in args]], capture_output=True, text=True, timeout=timeout)


# ---- reading --help ---------------------------------------------------------------------------

def commands():
    """The subcommands `shardrank --help` lists."""
    text = run("--help").stdout
    section = text.split("SUBCOMMANDS:", 1)[1]
    names = re.findall(r"^  ([a-z][a-z0-9-]*)(?:\s|$)", section, re.M)
    assert len(names) >= 12, text
    return names


_help_cache = {}


def help_options(cmd):
    """{flag: (default shown by --help or None, the entry's whole text)} of `shardrank CMD --help`."""
    if cmd in _help_cache:
        return _help_cache[cmd]
    out = run(cmd, "--help")
    assert out.returncode == 0, out.stderr
    section = out.stdout.split("OPTIONS:", 1)[1]
    entries, cur = [], None
    for line in section.splitlines():
        if re.match(r"^  -", line):
            cur = [line.strip()]
            entries.append(cur)
        elif cur is not None and line.startswith("   ") and line.strip():
            cur.append(line.strip())
        else:
            cur = None
    opts = {}
    for e in entries:
        text = " ".join(e)
        names = re.findall(r"--[a-z0-9][a-z0-9-]*", text.split("  ")[0])
        assert names, text
        m = re.search(r"\(default: (.*?)\)$", text)
        opts[names[0]] = (m.group(1) if m else None, text)
    _help_cache[cmd] = opts
    return opts


def usage_line(cmd):
    text = run(cmd, "--help").stdout
    return " ".join(text.split("USAGE:", 1)[1].split("OPTIONS:", 1)[0].split())


# ---- reading docs/cli.md ----------------------------------------------------------------------

def doc_table(name):
    """Rows (lists of cells) of the table after `<!-- cli:NAME -->` in docs/cli.md."""
    text = open(CLI_MD, encoding="utf-8").read()
    marker = f"<!-- cli:{name} -->"
    assert marker in text, f"docs/cli.md lost its {name} table"
    lines = text.split(marker, 1)[1].strip().splitlines()
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        rows.append(cells)
    assert len(rows) > 2 and set(rows[1][0]) <= set("-:"), f"{name}: not a table"
    return rows[2:]


def ticked(cell):
    return re.findall(r"`([^`]*)`", cell)


def doc_commands():
    return {ticked(r[0])[0]: r for r in doc_table("commands")}


def server_flags():
    return {ticked(r[0])[0]: r[2] for r in doc_table("server")}


def shared_rows():
    """[(flag, default cell, [commands])] of the shared-flags table."""
    out = []
    for r in doc_table("shared"):
        flag, default, cmds = ticked(r[0])[0], r[3], [c.strip() for c in r[4].split(",")]
        out.append((flag, default, cmds))
    return out


def same_default(doc, shown):
    """A documented default in backticks against what --help shows (10 == 10.0)."""
    if doc == shown:
        return True
    try:
        return float(doc) == float(shown)
    except (TypeError, ValueError):
        return False


def check_default(cmd, flag, cell):
    shown, text = help_options(cmd)[flag]
    values = ticked(cell)
    if len(values) == 1 and cell.strip() == f"`{values[0]}`":
        assert shown is not None and same_default(values[0], shown), \
            f"{cmd} {flag}: docs/cli.md says default {values[0]}, --help shows {shown!r}: {text}"
    else:
        # Stated in words (or required, or off): --help must not show a (default: …) of its own.
        assert shown is None, f"{cmd} {flag}: docs/cli.md gives the default as {cell!r}, --help shows (default: {shown}): {text}"


# ---- the doc and --help agree -----------------------------------------------------------------

def test_every_command_is_in_the_doc():
    cmds = commands()
    assert set(cmds) == set(doc_commands()), "docs/cli.md's command table vs `shardrank --help`"
    assert set(cmds) == {ticked(r[0])[0] for r in doc_table("exit")}, "docs/cli.md's exit-status table vs `shardrank --help`"
    assert "route" in cmds


@pytest.mark.parametrize("cmd", commands())
def test_each_command_has_exactly_the_documented_flags(cmd):
    row = doc_commands()[cmd]
    documented = {f for f in ticked(row[2]) if f.startswith("--")}
    if "the server flags" in row[2]:
        documented |= set(server_flags())
    shown = set(help_options(cmd)) - ALWAYS
    assert shown == documented, f"{cmd}: only in --help {sorted(shown - documented)}, only in docs/cli.md {sorted(documented - shown)}"


def test_shared_flags_have_the_documented_defaults():
    cmds = set(commands())
    for flag, default, users in shared_rows():
        for cmd in users:
            assert cmd in cmds, f"docs/cli.md lists {flag} for an unknown command {cmd}"
            assert flag in help_options(cmd), f"docs/cli.md lists {flag} for {cmd}, its --help does not have it"
            check_default(cmd, flag, default)


def test_a_shared_name_is_used_only_where_the_doc_says():
    """A flag name in the vocabulary means one thing: a command that takes it is listed for it."""
    listed = {(flag, cmd) for flag, _, users in shared_rows() for cmd in users}
    names = {flag for flag, _ in listed}
    servers = [c for c, r in doc_commands().items() if "the server flags" in r[2]]
    for cmd in commands():
        for flag in help_options(cmd):
            if flag in names:
                assert (flag, cmd) in listed or (cmd in servers and flag in server_flags()), \
                    f"{cmd} takes {flag}, which docs/cli.md gives other commands only: document what it means here"


def test_server_flags_have_the_documented_defaults():
    servers = [c for c, r in doc_commands().items() if "the server flags" in r[2]]
    assert sorted(servers) == ["coordinator", "shard"]
    for cmd in servers:
        for flag, default in server_flags().items():
            check_default(cmd, flag, default)


def test_client_commands_share_one_timeout_default():
    clients = [c for c in commands() if "--target" in help_options(c)]
    assert len(clients) >= 8
    for c in clients:
        shown, text = help_options(c)["--timeout-ms"]
        assert shown == "5000", f"{c}: {text}"


def test_no_flag_states_two_defaults():
    """`recommend --lambda` once said "default: the server's" and "(default: 0.0)"."""
    for cmd in commands():
        for flag, (shown, text) in help_options(cmd).items():
            if shown is None:
                continue
            body = re.sub(r"\(default: .*?\)$", "", text)
            assert not re.search(r"\bdefault:|\(default\b", body, re.I), f"{cmd} {flag} states its default twice: {text}"
    shown, text = help_options("recommend")["--lambda"]
    assert shown is None and text.count("default") == 1, text


def test_a_model_flag_names_a_model_never_a_file():
    for cmd in commands():
        opts = help_options(cmd)
        if "--model" in opts:
            assert "safetensors" not in opts["--model"][1] and "file" not in opts["--model"][1].lower(), (cmd, opts["--model"])


def test_old_spellings_work_but_are_not_shown():
    for row in doc_table("renamed"):
        cmd, old, new = ticked(row[0])[0], ticked(row[1])[0], ticked(row[2])[0]
        opts = help_options(cmd)
        assert new in opts, f"{cmd}: {new} is not in --help"
        assert old not in opts, f"{cmd}: the old spelling {old} still shows in --help"
        assert old not in run(cmd, "--help").stdout.split("OPTIONS:", 1)[1].split(), f"{cmd} --help mentions {old}"
        # Parsed as the new flag: whatever the error is then (a missing flag, a bad value), it is
        # not an unknown option.
        for args in ([old, "1"], [f"{old}=1"]):
            out = run(cmd, *args)
            assert "Unknown option" not in out.stderr, (cmd, args, out.stderr)
            assert not re.search(re.escape(old) + r"(?![a-z0-9-])", out.stderr), (cmd, args, out.stderr)


def test_an_old_spelling_reaches_the_server(free_port):
    out = run("recommend", "--coordinator", f"127.0.0.1:{free_port}", "--user", "1", "--timeout-ms", "1000")
    assert out.returncode == 1 and "connection refused" in out.stderr, (out.returncode, out.stderr)


# ---- behaviour --------------------------------------------------------------------------------

@pytest.fixture
def free_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_negative_numbers_are_values(free_port):
    target = f"127.0.0.1:{free_port}"
    for args in (["--duration", "-5"], ["--duration=-5"], ["--duration", "-0.5"]):
        out = run("loadtest", "--target", target, "--rate", "5", *args)
        assert out.returncode == 64, (args, out.returncode, out.stderr)
        assert "--duration must be > 0" in out.stderr, (args, out.stderr)
        assert "Missing value" not in out.stderr and "Unknown option" not in out.stderr, out.stderr
    out = run("health", "--target", target, "--wait", "-1")
    assert out.returncode == 64 and "--wait must be 0...3600" in out.stderr, out.stderr
    out = run("recommend", "--target", target, "--user", "1", "--k", "-3")
    assert out.returncode == 64 and "'-3' is invalid for '--k" in out.stderr, out.stderr
    out = run("shard", "--synthetic", "10x4", "--shard", "-1")
    assert out.returncode == 64 and "--shard must be ≥ 0" in out.stderr, out.stderr


def test_an_eval_budget_beyond_the_wire_is_a_usage_error(free_port):
    """Budgets travel as uint32: 1e11 used to trap in the conversion; now a usage error (exit 64)."""
    out = run("eval", "--target", f"127.0.0.1:{free_port}", "--heldout", "/dev/null", "--budgets", "100000000000")
    assert out.returncode == 64 and "--budgets: 100000000000 is more than 1000000" in out.stderr, (out.returncode, out.stderr)


def test_a_synthetic_table_too_big_for_memory_is_a_usage_error():
    """It is materialised: 100M × 4096 floats would be 1.6 TB (it used to abort in the allocator)."""
    out = run("shard", "--synthetic", "100000000x4096", "--port", "0")
    assert out.returncode == 64 and "would take 1638400000000 bytes of memory" in out.stderr, (out.returncode, out.stderr)


def test_a_mistyped_command_is_named():
    out = run("recomend", "--user", "1")
    assert out.returncode == 64, out.returncode
    assert "unknown command 'recomend'" in out.stderr and "did you mean 'recommend'?" in out.stderr, out.stderr
    assert "Unknown option" not in out.stderr
    out = run("lokup")
    assert out.returncode == 64 and "did you mean 'lookup'?" in out.stderr, out.stderr
    out = run("frobnicate")
    assert out.returncode == 64 and "unknown command 'frobnicate'" in out.stderr and "did you mean" not in out.stderr
    assert all(c in out.stderr for c in commands()), out.stderr
    assert run("help", "route").returncode == 0


def test_a_usage_error_shows_its_commands_usage(free_port):
    # Found while the command runs (loadtest checks its flags in run()) ...
    out = run("loadtest", "--target", f"127.0.0.1:{free_port}", "--rate", "5", "--duration", "0")
    assert out.returncode == 64
    assert "Usage: shardrank loadtest" in out.stderr and "shardrank <subcommand>" not in out.stderr, out.stderr
    assert "See 'shardrank loadtest --help'" in out.stderr
    # ... and while parsing.
    out = run("route", "--ids", "1")
    assert out.returncode == 64 and "Usage: shardrank route" in out.stderr and "give exactly one of --target" in out.stderr, out.stderr
    out = run("recommend", "--target", f"127.0.0.1:{free_port}", "--user", "1", "--recent-ids", "1,x")
    assert out.returncode == 64 and "Usage: shardrank recommend" in out.stderr and "--recent-ids: 'x'" in out.stderr, out.stderr


@pytest.mark.parametrize("cmd", commands())
def test_a_bad_flag_exits_64(cmd):
    out = run(cmd, "--no-such-flag", "1")
    assert out.returncode == 64, (cmd, out.returncode, out.stderr)
    assert f"Usage: shardrank {cmd}" in out.stderr, out.stderr


def test_documented_exit_statuses_of_client_commands(free_port, tmp_path):
    target = f"127.0.0.1:{free_port}"
    for args in (["lookup", "--ids", "1"], ["info"], ["route", "--ids", "1"], ["recommend", "--user", "1"]):
        out = run(args[0], "--target", target, *args[1:], "--timeout-ms", "1000")
        assert out.returncode == 1 and "connection refused" in out.stderr, (args, out.returncode, out.stderr)
    out = run("health", "--target", target, "--timeout-ms", "1000")
    assert out.returncode == 1, out.stderr
    out = run("route", "--tables", tmp_path / "nothing-here", "--ids", "1")
    assert out.returncode == 2 and "no complete table-set version" in out.stderr, (out.returncode, out.stderr)
    out = run("synth", "--out", tmp_path / "w", "--users", "0")
    assert out.returncode == 64 and "--users" in out.stderr, out.stderr


# ---- route against a real 2-shard table set ---------------------------------------------------

@pytest.fixture
def two_shards(tmp_path, server_factory):
    inp, root = tmp_path / "input", tmp_path / "tables"
    item_ids, _ = write_input(str(inp))
    out = build(shardrank_bin(), str(inp), str(root), 2)
    assert out.returncode == 0, out.stderr
    # No --of: the shards read the shard count from the manifest.
    shards = [server_factory(["shard", "--tables", str(root), "--shard", str(s), "--port", "0", "--allow-foreign-ids",
                              "--log-level", "warning"]) for s in range(2)]
    return {"root": root, "ids": [int(i) for i in item_ids], "shards": shards, "tmp": tmp_path}


def routed(*args):
    out = run("route", *args)
    assert out.returncode == 0, out.stderr
    got = {}
    for line in out.stdout.splitlines():
        m = re.fullmatch(r"id (\d+) → shard (\d+) of (\d+)", line)
        assert m, line
        assert m.group(3) == "2", line
        got[int(m.group(1))] = int(m.group(2))
    return got


def found_on(target, i):
    out = run("lookup", "--target", target, "--ids", i, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    return [r["id"] for r in doc["rows"]] == [i] and doc["missing"] == []


def test_route_names_the_shard_whose_lookup_finds_the_id(two_shards, server_factory):
    shards, root = two_shards["shards"], two_shards["root"]
    ids = two_shards["ids"][:12] + [1, 2, 3]
    arg = ",".join(map(str, ids))
    by_shard0, by_shard1 = routed("--target", shards[0].target, "--ids", arg), routed("--target", shards[1].target, "--ids", arg)
    offline = routed("--tables", root, "--ids", arg)
    assert by_shard0 == by_shard1 == offline == {i: shard_of(i, 2) for i in ids}
    assert set(offline.values()) == {0, 1}
    for i in two_shards["ids"][:12]:
        s = offline[i]
        assert found_on(shards[s].target, i), f"id {i}: route says shard {s}, whose Lookup does not find it"
        assert not found_on(shards[1 - s].target, i), f"id {i}: the other shard has it too"
    # A coordinator answers for its cluster.
    topo = two_shards["tmp"] / "topology.json"
    topo.write_text(json.dumps({"tables": str(root), "shards": [[s.target] for s in shards]}))
    coord = server_factory(["coordinator", "--topology", str(topo), "--port", "0", "--log-level", "warning"])
    assert run("health", "--target", coord.target, "--wait", "30", timeout=60).returncode == 0
    assert routed("--target", coord.target, "--ids", arg) == offline
    out = run("route", "--target", coord.target, "--ids", "3,1", "--json")
    doc = json.loads(out.stdout)
    assert doc["shard_count"] == 2 and doc["hash_seed"] == "0x9e3779b97f4a7c15"
    assert doc["ids"] == [{"id": 3, "shard": shard_of(3, 2)}, {"id": 1, "shard": shard_of(1, 2)}]


def test_shard_takes_its_count_from_the_manifest(two_shards):
    root = two_shards["root"]
    out = run("info", "--target", two_shards["shards"][1].target)
    assert out.returncode == 0 and "shard 1 of 2" in out.stdout, out.stdout
    # A disagreeing --of is refused, naming both counts; a --shard beyond the count is a usage error.
    out = run("shard", "--tables", root, "--shard", "0", "--of", "3", "--port", "0", timeout=60)
    assert out.returncode == 2 and "--of 3 disagrees" in out.stderr and "has 2 shards" in out.stderr, (out.returncode, out.stderr)
    out = run("shard", "--tables", root, "--shard", "2", "--port", "0", timeout=60)
    assert out.returncode == 64 and "--shard 2 is not a shard" in out.stderr and "Usage: shardrank shard" in out.stderr, out.stderr
