"""One source for every default: the code's defaults (`specwatch --print-defaults`, generated from the key table
in server/config_keys.cpp) against every place a user reads one: `specwatch --help` (the key listing and each
flag's default), deploy/specwatch.conf (a file of the defaults), the configuration table of proto/README.md, and
the prose of README.md, proto/README.md and docs/*.md where it says `key` (value). A document that states another
default than the code, a key the schema does not have, or a key the conf, the help or the table omit fails."""

import math
import os
import re
import subprocess
import unittest
from dataclasses import dataclass
from typing import Dict, List, Tuple

from harness import BIN, ROOT

SECTIONS = ("pca", "novelty", "drift", "dose", "advice", "damage")


@dataclass
class Claim:
    key: str
    value: str       # raw, strings unquoted
    line: int        # 1-based line in the source
    source: str
    quoted: bool = False
    note: str = ""


def parse_proto_schema(text: str, root: str = "ServiceConfig") -> Dict[str, str]:
    body = re.sub(r"//[^\n]*", "", text)
    messages: Dict[str, List[Tuple[str, str]]] = {}
    for m in re.finditer(r"\bmessage\s+(\w+)\s*\{(.*?)\n\}", body, re.S):
        fields = re.findall(r"^\s*(?:optional\s+|repeated\s+)?([\w.]+)\s+(\w+)\s*=\s*\d+\s*;", m.group(2), re.M)
        messages[m.group(1)] = fields
    out: Dict[str, str] = {}

    def walk(msg: str, prefix: str) -> None:
        for ftype, name in messages[msg]:
            if ftype in messages:
                walk(ftype, prefix + name + ".")
            else:
                out[prefix + name] = ftype
    walk(root, "")
    return out



_TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|[{}:;,<>\[\]]|[^\s{}:;,<>\[\]#"\']+')


def _unescape(s: str) -> str:
    return bytes(s[1:-1], "utf-8").decode("unicode_escape")


def parse_textformat(text: str, source: str) -> Dict[str, Claim]:
    tokens: List[Tuple[str, int]] = []
    line = 1
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"{source}:{line}: cannot tokenise {text[pos:pos + 20]!r}")
        tok = m.group(0)
        if not tok.isspace() and not tok.startswith("#"):
            tokens.append((tok, line))
        line += tok.count("\n")
        pos = m.end()
    out: Dict[str, Claim] = {}
    stack: List[str] = []
    i = 0
    while i < len(tokens):
        tok, ln = tokens[i]
        if tok in ("}", ">"):
            if not stack:
                raise ValueError(f"{source}:{ln}: unbalanced '}}'")
            stack.pop()
            i += 1
            continue
        if tok in (";", ","):
            i += 1
            continue
        name = tok
        nxt = tokens[i + 1][0] if i + 1 < len(tokens) else ""
        if nxt == ":" and i + 2 < len(tokens) and tokens[i + 2][0] in ("{", "<"):
            i += 1
            nxt = tokens[i + 1][0]
        if nxt in ("{", "<"):
            stack.append(name)
            i += 2
            continue
        if nxt != ":" or i + 2 >= len(tokens):
            raise ValueError(f"{source}:{ln}: expected ':' after {name!r}")
        value, vln = tokens[i + 2]
        quoted = value[0] in "\"'"
        if quoted:  # adjacent string literals concatenate
            parts = [_unescape(value)]
            j = i + 3
            while j < len(tokens) and tokens[j][0][0] in "\"'":
                parts.append(_unescape(tokens[j][0]))
                j += 1
            value, i = "".join(parts), j
        else:
            i += 3
        key = ".".join(stack + [name])
        if key in out:
            raise ValueError(f"{source}:{vln}: {key} set twice")
        out[key] = Claim(key, value, vln, source, quoted)
    if stack:
        raise ValueError(f"{source}: unclosed block {'.'.join(stack)}")
    return out



def _cells(row: str) -> List[str]:
    # split on | outside backticks
    cells, cur, tick = [], "", False
    for ch in row.strip().strip("|"):
        if ch == "`":
            tick = not tick
        if ch == "|" and not tick:
            cells.append(cur.strip())
            cur = ""
        else:
            cur += ch
    cells.append(cur.strip())
    return cells


def parse_md_default_table(text: str, source: str) -> Tuple[Dict[str, Claim], Dict[str, str]]:
    lines = text.splitlines()
    out: Dict[str, Claim] = {}
    types: Dict[str, str] = {}
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith("|"):
            head = [c.lower() for c in _cells(lines[i])]
            if "field" in head and "default" in head:
                fi, di = head.index("field"), head.index("default")
                ti = head.index("type") if "type" in head else None
                i += 2  # header and |---| rule
                while i < len(lines) and lines[i].lstrip().startswith("|"):
                    c = _cells(lines[i])
                    key = c[fi].strip("`")
                    raw = c[di].strip()
                    if raw.startswith("`") and raw.endswith("`"):
                        raw = raw[1:-1]
                    quoted = raw.startswith('"') and raw.endswith('"')
                    out[key] = Claim(key, raw[1:-1] if quoted else raw, i + 1, source, quoted)
                    if ti is not None:
                        types[key] = c[ti]
                    i += 1
                continue
        i += 1
    return out, types



_SUP = "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"
_NUM = (r"-?(?:10[" + _SUP + r"]+|(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?:\s?[·×]\s?10[" + _SUP
        + r"]+)?)(?![\d" + _SUP + r"]|[.,]\d)")
_VAL = rf"(?P<val>{_NUM}|true|false)(?P<unit>\s?%|°|\s?s\b)?"
_KEY = r"`(?P<key>[A-Za-z_][\w.]*)`"
_PROSE = [
    ("P1", re.compile(_KEY + r"\s*\(" + _VAL)),
    ("P2", re.compile(_KEY + r",\s*" + _VAL + r"(?=[\s;,.:)]|$)")),
    ("P3", re.compile(_KEY + r"\s+(?:\w\s*=\s*)?" + _VAL + r"(?=[\s;,.:)]|$)")),
    ("P4", re.compile(r"`(?P<sec>" + "|".join(SECTIONS) + r") \{ (?P<key>\w+) \}`\s*\(" + _VAL)),
    ("P5", re.compile(r"`(?:(?P<sec>" + "|".join(SECTIONS) + r") \{ )?(?P<key>\w+): (?P<val>\"[^\"`]*\"|[^\s`}]+)"
                      r"(?: \})?`")),
    ("P6", re.compile(_KEY + r"[^.;()]{0,40}?,\s*" + _VAL + r" by default")),
]


def _number(text: str) -> str:
    """'20,000' -> '20000', '10⁻⁴' -> '1e-4', '6.2·10⁶' -> '6.2e6'."""
    t = text.replace(",", "")
    tr = str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789")
    m = re.fullmatch(r"(-?[\d.eE+-]+)\s?[·×]\s?10([" + _SUP + r"]+)", t)
    if m:
        return f"{m.group(1)}e{m.group(2).translate(tr)}"
    m = re.fullmatch(r"10([" + _SUP + r"]+)", t)
    if m:
        return f"1e{m.group(1).translate(tr)}"
    return t


def _paragraph_starts(lines: List[str]) -> List[int]:
    starts, cur = [], 0
    for i, l in enumerate(lines):
        if not l.strip() or l.lstrip().startswith(("- ", "* ", "#", "|")) or re.match(r"^\s*\d+\. ", l):
            cur = i
        starts.append(cur)
    return starts


def parse_prose(text: str, source: str, schema: Dict[str, str], skip_tables: bool = True,
                bare_leaves: bool = True) -> List[Claim]:
    """bare_leaves=False: only `section.key` / `section { key }` count (for proto/README.md, whose message
    fields share names with config keys: `rank`, `calibration_spectra`, `false_alarm_rate`, ...)."""
    leaves: Dict[str, List[str]] = {}
    for k in schema:
        leaves.setdefault(k.split(".")[-1], []).append(k)
    lines = text.splitlines()
    starts = _paragraph_starts(lines)
    out: List[Claim] = []
    in_code = False
    for idx, line in enumerate(lines):
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code or (skip_tables and line.lstrip().startswith("|")):
            continue
        seen_spans: List[Tuple[int, int]] = []
        # a claim may wrap onto the next line of the same paragraph: match on this line + the next, keep matches
        # that start on this line
        nxt = lines[idx + 1].strip() if idx + 1 < len(lines) and starts[idx + 1] == starts[idx] else ""
        own = len(line)
        line = line + (" " + nxt if nxt else "")
        for name, rx in _PROSE:
            for m in rx.finditer(line):
                if m.start() >= own or any(a <= m.start() < b for a, b in seen_spans):
                    continue
                if name == "P5":
                    # the cue "default" must be in the same sentence and clause, before the snippet
                    before = " ".join(lines[starts[idx]:idx] + [line[:m.start()]])
                    clause = re.split(r"[.!?]\s|;", before)[-1]
                    if "default" not in clause.lower():
                        continue
                key = m.group("key")
                sec = m.groupdict().get("sec")
                if sec:
                    key = f"{sec}.{key}"
                if key not in schema:
                    cands = leaves.get(key.split(".")[-1], []) if "." not in key else []
                    if not cands or not bare_leaves:
                        continue  # not a config key (library-only option, message field, ...)
                    if len(cands) == 1:
                        key = cands[0]
                    else:
                        # ambiguous leaf: the section named last in the paragraph, or of a key resolved in it
                        ctx = " ".join(lines[starts[idx]:idx]) + " " + line[:m.start()]
                        secs = [(mm.start(), mm.group(1)) for mm in
                                re.finditer(r"\b(" + "|".join(SECTIONS) + r")(?: \{|\.\w)", ctx)]
                        para = [c for c in out if c.source == source and starts[c.line - 1] == starts[idx]
                                and not c.key.startswith("?") and "." in c.key]
                        guess = (f"{secs[-1][1]}.{key}" if secs else
                                 f"{para[-1].key.split('.')[0]}.{key}" if para else None)
                        key = guess if guess in schema else "?" + key
                val = m.group("val")
                quoted = val.startswith('"')
                if quoted:
                    val = val[1:-1]
                unit = (m.groupdict().get("unit") or "").strip()
                if unit == "%":
                    val = repr(float(_number(val)) / 100)
                out.append(Claim(key, val if quoted else _number(val), idx + 1, source, quoted,
                                 note=name + (f" [{unit}]" if unit else "")))
                seen_spans.append((m.start(), m.end()))
    return out



_INT_TYPES = {"uint32", "uint64", "int32", "int64", "sint32", "sint64", "fixed32", "fixed64"}


def normalise(value: str, proto_type: str):
    v = value.strip()
    if proto_type == "bool":
        if v in ("true", "True", "1", "t"):
            return True
        if v in ("false", "False", "0", "f"):
            return False
        raise ValueError(f"not a bool: {value!r}")
    if proto_type in _INT_TYPES:
        f = float(v.replace(",", ""))
        if f != int(f):
            raise ValueError(f"not an integer: {value!r}")
        return int(f)
    if proto_type in ("double", "float"):
        return float(v.replace(",", ""))
    return v  # string: already unquoted


def equal(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-15)
    return a == b



_HELP_KEY = re.compile(r'^(?P<indent> *)(?P<name>\w+):\s+(?P<value>"(?:[^"\\]|\\.)*"|\S+)')
_HELP_OPEN = re.compile(r"^ *(?P<name>\w+) \{$")
_HELP_FLAG = re.compile(r'^  (?P<flag>--[\w-]+) .*\((?P<key>[\w.]+), default (?P<value>"(?:[^"\\]|\\.)*"|[^)\s]+)\)$')


def parse_help(text: str) -> Tuple[Dict[str, Claim], Dict[str, Claim]]:
    """`specwatch --help`: the flags (each names its key and default) and the key listing (after the line
    "config file keys ..."; `name: value  help`, sections as `name {` ... `}`)."""
    keys: Dict[str, Claim] = {}
    flags: Dict[str, Claim] = {}
    stack: List[str] = []
    in_keys = False
    for ln, line in enumerate(text.splitlines(), 1):
        if line.startswith("config file keys"):
            in_keys = True
            continue
        if not in_keys:
            m = _HELP_FLAG.match(line)
            if m:
                v = m.group("value")
                quoted = v.startswith('"')
                flags[m.group("flag")] = Claim(m.group("key"), _unescape(v) if quoted else v, ln, "--help", quoted,
                                               note=m.group("flag"))
            continue
        if re.match(r"^ *\}$", line):
            stack.pop()
            continue
        m = _HELP_OPEN.match(line)
        if m:
            stack.append(m.group("name"))
            continue
        m = _HELP_KEY.match(line)
        if m:
            v = m.group("value")
            quoted = v.startswith('"')
            key = ".".join(stack + [m.group("name")])
            keys[key] = Claim(key, _unescape(v) if quoted else v, ln, "--help", quoted)
    return keys, flags




def read(path: str) -> str:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def run(*args: str) -> str:
    r = subprocess.run([os.path.join(BIN, "specwatch"), *args], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"specwatch {' '.join(args)} exited {r.returncode}: {r.stderr}")
    return r.stdout


class DefaultsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.schema = parse_proto_schema(read("proto/config.proto"))
        printed = parse_textformat(run("--print-defaults"), "--print-defaults")
        cls.code = {k: normalise(c.value, cls.schema[k]) for k, c in printed.items()}

    def check_claims(self, claims, complete: bool):
        problems = []
        for k, c in claims.items() if isinstance(claims, dict) else ((c.key, c) for c in claims):
            if k not in self.schema:
                problems.append(f"{c.source}:{c.line}: {k} is not a config key")
                continue
            try:
                v = normalise(c.value, self.schema[k])
            except ValueError as e:
                problems.append(f"{c.source}:{c.line}: {k}: {e}")
                continue
            if not equal(v, self.code[k]):
                problems.append(f"{c.source}:{c.line}: {k} = {c.value!r}, the code's default is {self.code[k]!r}")
        if complete:
            for k in self.schema:
                if k not in claims:
                    problems.append(f"{k} is missing")
        self.assertEqual(problems, [])

    def test_print_defaults_has_every_key_and_reads_back(self):
        self.assertEqual(sorted(self.code), sorted(self.schema))
        # The printed defaults are a config file: --check-config accepts it and prints the same configuration.
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "defaults.conf")
            with open(path, "w") as f:
                f.write(run("--print-defaults"))
            checked = run("--check-config", "--config", path)
        self.assertEqual(checked.replace("# configuration is valid\n", ""), run("--print-defaults"))

    def test_help_states_the_code_defaults(self):
        keys, flags = parse_help(run("--help"))
        self.check_claims(keys, complete=True)
        self.assertGreaterEqual(len(flags), 10)
        self.check_claims({c.key: c for c in flags.values()}, complete=False)

    def test_deploy_conf_is_the_defaults(self):
        self.check_claims(parse_textformat(read("deploy/specwatch.conf"), "deploy/specwatch.conf"), complete=True)

    def test_proto_readme_table_states_the_code_defaults(self):
        table, types = parse_md_default_table(read("proto/README.md"), "proto/README.md")
        self.check_claims(table, complete=True)
        self.assertEqual({k: t for k, t in types.items() if k in self.schema},
                         {k: self.schema[k] for k in types if k in self.schema})

    def test_prose_states_the_code_defaults(self):
        claims = []
        for p in ["README.md", "proto/README.md"] + sorted(
                "docs/" + f for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md")):
            claims += [c for c in parse_prose(read(p), p, self.schema, bare_leaves=(p != "proto/README.md"))
                       if not c.key.startswith("?")]
        self.assertGreater(len(claims), 5)  # the parser finds the claims the documents make
        self.check_claims(claims, complete=False)


if __name__ == "__main__":
    unittest.main()
