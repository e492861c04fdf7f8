#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Write the committed fuzz inputs: the seed corpora (corpus/TARGET/) and
the malformed-model cases with their expectations (cases/).

    python3 tests/fuzz/gen_inputs.py      # from anywhere; rewrites both

The files are committed; this script is how they were made and how to add
one (add it below, rerun, commit the new files). Run it again and nothing
changes: every byte is deterministic. Cases too big to commit (100 MB
headers) are made at test time by cases.c instead.
"""
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = os.path.join(HERE, "cases")
CORPUS = os.path.join(HERE, "corpus")

BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
        "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16,
        "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "F64": 64, "I64": 64,
        "U64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}


def st_raw(n, header: bytes, data: bytes = b"") -> bytes:
    """8-byte little-endian n, the header bytes, the data."""
    return struct.pack("<Q", n) + header + data


def st_bytes(header, data=b""):
    if isinstance(header, str):
        header = header.encode()
    return st_raw(len(header), header, data)


def tensors(spec, metadata=None):
    """A sound file: spec = [(name, dtype, shape)], laid out in order."""
    hdr, off = {}, 0
    if metadata is not None:
        hdr["__metadata__"] = metadata
    for name, dt, shape in spec:
        n = 1
        for d in shape:
            n *= d
        size = n * BITS[dt] // 8
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + size]}
        off += size
    h = json.dumps(hdr, separators=(",", ":"), ensure_ascii=False).encode()
    return st_bytes(h, bytes(i & 0xFF for i in range(off)))


def T(name, dt, shape, b, e):
    return '"%s":{"dtype":"%s","shape":%s,"data_offsets":[%d,%d]}' % (name, dt, shape, b, e)


# ---- cases: NAME -> (file bytes, expected) --------------------------------

FILES = {
    # the 8-byte size
    "size-empty-file": (b"", "too short for the 8-byte header size"),
    "size-short-file": (b"\x02\x00\x00\x00", "too short for the 8-byte header size"),
    "size-over-limit": (st_raw(100000001, b"{}"), "exceeds the limit of 100000000 bytes"),
    "size-2e64-minus-1": (st_raw(2**64 - 1, b"{}"), "header size 18446744073709551615 exceeds"),
    "size-2e64-minus-8": (st_raw(2**64 - 8, b"{}"), "header size 18446744073709551608 exceeds"),
    "size-2e63": (st_raw(2**63, b"{}"), "exceeds the limit"),
    "size-past-eof": (st_raw(1000, b"{}" + b" " * 40), "runs past the end of the file (50 bytes)"),
    "size-limit-past-eof": (st_raw(100000000, b"{}"), "runs past the end of the file"),
    "size-one-past-eof": (st_raw(3, b"{}"), "runs past the end of the file"),
    "size-zero": (st_raw(0, b""), "not valid JSON"),
    # the JSON text
    "json-truncated": (st_bytes('{"w":{"dtype":"U8"'), "not valid JSON"),
    "json-trailing-garbage": (st_bytes("{} x"), "not valid JSON"),
    "json-two-values": (st_bytes("{}{}"), "not valid JSON"),
    "json-nul-padding": (st_bytes(b"{}\0\0\0\0\0\0"), "not valid JSON"),
    "json-leading-nul": (st_bytes(b"\0{}"), "not valid JSON"),
    "json-bom": (st_bytes(b"\xef\xbb\xbf{}"), "not valid JSON"),
    "json-space-padding": (st_bytes("  {}\n\t\r   "), "ok"),
    "json-terminal-escape": (st_bytes(b'{"a":\x1b]0;owned\x07\x1b[2J}'), "invalid token near '\\x1b'"),
    # C1 (the 8-bit CSI U+009B) and bidi overrides (U+202E) in the excerpt
    # jansson echoes: written as \xHH in the message like C0 controls
    "json-c1-csi": (st_bytes(b'{"a":\xc2\x9b[2J}'), "invalid token near '\\xc2\\x9b"),
    "json-bidi-override": (st_bytes(b'{"a":\xe2\x80\xae}'), "invalid token near '\\xe2\\x80\\xae'"),
    "name-c1-bidi": (st_bytes("{" + T("a\u009b\u202eb", "F17", "[1]", 0, 1) + "}", b"a"),
                     "tensor 'a\\xc2\\x9b\\xe2\\x80\\xaeb': unknown dtype 'F17'"),
    "json-array": (st_bytes("[]"), "header is not a JSON object"),
    "json-string": (st_bytes('"x"'), "not valid JSON"),
    "json-nested-3000": (st_bytes("[" * 3000 + "]" * 3000), "maximum parsing depth"),
    "json-big-integer": (st_bytes('{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1' + "0" * 400 + ']}}'), "not valid JSON"),
    # names
    "name-duplicate": (st_bytes("{" + T("w", "U8", "[1]", 0, 1) + "," + T("w", "U8", "[1]", 1, 2) + "}", b"ab"), "duplicate"),
    "name-duplicate-escaped": (st_bytes("{" + T("\u00e9", "U8", "[1]", 0, 1) + "," + T("\\u00e9", "U8", "[1]", 1, 2) + "}", b"ab"), "duplicate"),
    "name-duplicate-metadata": (st_bytes('{"__metadata__":{},"__metadata__":{}}'), "duplicate"),
    "name-nul-escape": (st_bytes("{" + T("a\\u0000b", "U8", "[1]", 0, 1) + "}", b"a"), "not valid JSON"),
    "name-nul-raw": (st_bytes(b'{"a\0b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"a"), "not valid JSON"),
    "name-invalid-utf8": (st_bytes(b'{"\xff":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"a"), "not valid JSON"),
    "name-overlong-utf8": (st_bytes(b'{"\xc0\xaf":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"a"), "not valid JSON"),
    "name-surrogate-utf8": (st_bytes(b'{"\xed\xa0\x80":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"a"), "not valid JSON"),
    "name-lone-surrogate-escape": (st_bytes("{" + T("\\ud800", "U8", "[1]", 0, 1) + "}", b"a"), "not valid JSON"),
    "name-dotdot-slash": (tensors([("../../etc/passwd", "U8", [1]), ("..", "U8", [1]), (".", "U8", [1]), ("a/../b", "U8", [2]), ("/abs", "U8", [1])]), "ok"),
    "name-stfs-control": (tensors([(".stfs.control", "U8", [1]), (".stfs", "U8", [1]), ("stfs", "U8", [1])]), "ok"),
    "name-empty-and-dots": (tensors([("", "U8", [1]), ("a..b", "U8", [1]), ("a.", "U8", [1]), (".a", "U8", [1])]), "ok"),
    "name-percent": (tensors([("%", "U8", [1]), ("%25", "U8", [1]), ("%t", "U8", [1]), ("%2F", "U8", [1]), ("a/b", "U8", [1])]), "ok"),
    "name-leaf-and-prefix": (tensors([("a.b", "U8", [1]), ("a.b.c", "U8", [1]), ("a", "U8", [1])]), "ok"),
    "name-long": (tensors([("x" * 300, "U8", [1]), ("x" * 300 + "y", "U8", [1]), ("x" * 240 + "%" + "z" * 30, "U8", [1])]), "ok"),
    "name-unicode": (tensors([("\u00fcn\u00efc\u00f6d\u00e9.w", "F16", [2]), ("\U0001F600", "U8", [1])]), "ok"),
    # __metadata__
    "meta-not-object": (st_bytes('{"__metadata__":["a","b"]}'), '"__metadata__" is not an object'),
    "meta-value-int": (st_bytes('{"__metadata__":{"format":1}}'), "value of 'format' is not a string"),
    "meta-value-null": (st_bytes('{"__metadata__":{"k":null}}'), "value of 'k' is not a string"),
    "meta-value-object": (st_bytes('{"__metadata__":{"k":{"a":"b"}}}'), "value of 'k' is not a string"),
    "meta-value-array": (st_bytes('{"__metadata__":{"k":[[],[],[]]}}'), "value of 'k' is not a string"),
    "meta-strings": (tensors([("w", "U8", [1])], {"format": "pt", "": "", "k\u00e9": "v\u00e9"}), "ok"),
    # tensor entries
    "entry-not-object": (st_bytes('{"w":[1,2]}'), "entry is not an object"),
    "entry-unknown-key": (st_bytes('{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1}}', b"a"), "unknown key 'x'"),
    "entry-missing-dtype": (st_bytes('{"w":{"shape":[1],"data_offsets":[0,1]}}', b"a"), '"dtype" is missing or not a string'),
    "entry-dtype-not-string": (st_bytes('{"w":{"dtype":8,"shape":[1],"data_offsets":[0,1]}}', b"a"), '"dtype" is missing or not a string'),
    "entry-unknown-dtype": (st_bytes("{" + T("w", "F17", "[1]", 0, 1) + "}", b"a"), "unknown dtype 'F17'"),
    "entry-dtype-lowercase": (st_bytes("{" + T("w", "f32", "[1]", 0, 4) + "}", b"abcd"), "unknown dtype 'f32'"),
    "entry-missing-shape": (st_bytes('{"w":{"dtype":"U8","data_offsets":[0,1]}}', b"a"), '"shape" is missing or not an array'),
    "entry-shape-negative": (st_bytes("{" + T("w", "U8", "[-1]", 0, 1) + "}", b"a"), "dimension 0 is not a non-negative integer"),
    "entry-shape-float": (st_bytes("{" + T("w", "U8", "[2, 1.0]", 0, 2) + "}", b"ab"), "dimension 1 is not a non-negative integer"),
    "entry-shape-string": (st_bytes("{" + T("w", "U8", '["1"]', 0, 1) + "}", b"a"), "dimension 0 is not a non-negative integer"),
    "entry-shape-product-overflow": (st_bytes("{" + T("w", "U8", "[4294967296,4294967296]", 0, 1) + "}", b"a"), 'element count of "shape" overflows 64 bits'),
    "entry-shape-overflow-then-zero": (st_bytes("{" + T("w", "U8", "[4294967296,4294967296,0]", 0, 0) + "}"), 'element count of "shape" overflows 64 bits'),
    "entry-shape-product-wraps-to-small": (st_bytes("{" + T("w", "U8", "[4294967297,4294967295]", 0, 1) + "}", b"a"), "overflows 64 bits"),
    "entry-bit-count-overflow": (st_bytes("{" + T("w", "F64", "[2305843009213693952]", 0, 8) + "}", b"abcdefgh"), "bit count of shape [2305843009213693952] overflows 64 bits"),
    "entry-missing-offsets": (st_bytes('{"w":{"dtype":"U8","shape":[1]}}', b"a"), '"data_offsets" is missing or not two non-negative integers'),
    "entry-offsets-three": (st_bytes('{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}}', b"a"), '"data_offsets" is missing'),
    "entry-offsets-negative": (st_bytes("{" + T("w", "U8", "[1]", -1, 0) + "}", b"a"), '"data_offsets" is missing'),
    "entry-offsets-float": (st_bytes('{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1e0]}}', b"a"), '"data_offsets" is missing'),
    "entry-begin-after-end": (st_bytes("{" + T("w", "U8", "[0]", 4, 0) + "}", b"abcd"), "data_offsets begin 4 > end 0"),
    "entry-size-mismatch": (st_bytes("{" + T("w", "F32", "[3]", 0, 10) + "}", b"a" * 10), "data_offsets [0, 10] span 10 bytes but F32 [3] needs 12 bytes"),
    "entry-f4-odd": (st_bytes("{" + T("w", "F4", "[3]", 0, 2) + "}", b"ab"), "3 elements of F4 (4 bits) are not a whole number of bytes"),
    "entry-f6-odd": (st_bytes("{" + T("w", "F6_E2M3", "[3]", 0, 2) + "}", b"ab"), "are not a whole number of bytes"),
    "entry-past-end": (st_bytes("{" + T("w", "U8", "[4]", 0, 4) + "}", b"ab"), "is past the end of the data buffer (2 bytes)"),
    "entry-offset-near-2e63": (st_bytes("{" + T("w", "F32", "[1]", 2**63 - 5, 2**63 - 1) + "}", b"abcd"), "past the end of the data buffer"),
    "entry-offset-beyond-int64": (st_bytes("{" + T("w", "U8", "[1]", 2**64 - 2, 2**64 - 1) + "}", b"a"), "not valid JSON"),
    # the tiling of the data buffer
    "tile-hole": (st_bytes("{" + T("a", "U8", "[2]", 0, 2) + "," + T("b", "U8", "[2]", 3, 5) + "}", b"abcde"), "hole of 1 bytes in the data buffer before tensor 'b'"),
    "tile-hole-at-start": (st_bytes("{" + T("a", "U8", "[2]", 2, 4) + "}", b"abcd"), "hole of 2 bytes"),
    "tile-overlap": (st_bytes("{" + T("a", "U8", "[4]", 0, 4) + "," + T("b", "U8", "[2]", 2, 4) + "}", b"abcd"), "overlaps tensor 'a'"),
    "tile-same-range": (st_bytes("{" + T("a", "F32", "[1]", 0, 4) + "," + T("b", "I32", "[1]", 0, 4) + "}", b"abcd"), "overlaps"),
    "tile-trailing": (st_bytes("{" + T("a", "U8", "[2]", 0, 2) + "}", b"abc"), "1 trailing bytes after the last tensor"),
    "tile-data-no-tensors": (st_bytes("{}", b"abcd"), "4 trailing bytes"),
    "tile-zero-size-inside": (st_bytes("{" + T("a", "U8", "[2]", 0, 2) + "," + T("z", "U8", "[0]", 1, 1) + "}", b"ab"), "overlaps"),
    # sound files
    "ok-empty": (st_bytes("{}"), "ok"),
    "ok-one": (tensors([("w", "F32", [2, 2])]), "ok"),
    "ok-scalar-and-zero-size": (tensors([("s", "F64", []), ("z", "F32", [0, 3]), ("e", "U8", [0])]), "ok"),
    "ok-every-dtype": (tensors([("t." + dt.lower(), dt, [8]) for dt in BITS]), "ok"),
    "ok-reverse-order": (st_bytes("{" + T("b", "U8", "[2]", 2, 4) + "," + T("a", "U8", "[2]", 0, 2) + "}", b"abcd"), "ok"),
    "ok-llama-names": (tensors([("model.embed_tokens.weight", "BF16", [4, 2]),
                                ("model.layers.0.self_attn.q_proj.weight", "BF16", [2, 2]),
                                ("model.layers.10.mlp.up_proj.weight", "F16", [2]),
                                ("model.layers.2.mlp.up_proj.weight", "F16", [2]),
                                ("model.norm.weight", "F32", [2]),
                                ("lm_head.weight", "BF16", [4, 2])], {"format": "pt"}), "ok"),
}


def shard(spec):
    return tensors(spec)


def index(weight_map, metadata=None):
    d = {}
    if metadata is not None:
        d["metadata"] = metadata
    d["weight_map"] = weight_map
    return json.dumps(d, indent=1).encode()


A = [("a.w", "U8", [2]), ("a.b", "U8", [1])]
B = [("b.w", "F32", [1])]
C = [("c.w", "F16", [2])]
WM = {"a.w": "s-1.safetensors", "a.b": "s-1.safetensors", "b.w": "s-2.safetensors",
      "c.w": "s-3.safetensors"}
SHARDS = {"s-1.safetensors": shard(A), "s-2.safetensors": shard(B), "s-3.safetensors": shard(C)}


def with_map(**changes):
    wm = dict(WM)
    for k, v in changes.items():
        k = k.replace("_", ".")
        if v is None:
            del wm[k]
        else:
            wm[k] = v
    return wm


# index cases: NAME -> ({file: bytes}, expected); opened through model.safetensors.index.json
IDX = "model.safetensors.index.json"
DIRS = {
    "index-ok": ({IDX: index(WM, {"total_size": 16}), **SHARDS}, "ok"),
    "index-traversal": ({IDX: index(with_map(c_w="../ok-one.safetensors")), **SHARDS},
                        "weight_map value '../ok-one.safetensors' is not a plain file name"),
    "index-absolute": ({IDX: index(with_map(c_w="/etc/passwd")), **SHARDS}, "is not a plain file name"),
    "index-subdir": ({IDX: index(with_map(c_w="sub/s-3.safetensors")), **SHARDS,
                      "sub/s-3.safetensors": SHARDS["s-3.safetensors"]}, "is not a plain file name"),
    "index-dotdot": ({IDX: index(with_map(c_w="..")), **SHARDS}, "weight_map value '..' is not a plain file name"),
    "index-dot": ({IDX: index(with_map(c_w=".")), **SHARDS}, "weight_map value '.' is not a plain file name"),
    "index-empty-shard-name": ({IDX: index(with_map(c_w="")), **SHARDS}, "weight_map value '' is not a plain file name"),
    "index-missing-shard": ({IDX: index(WM), "s-1.safetensors": SHARDS["s-1.safetensors"],
                             "s-2.safetensors": SHARDS["s-2.safetensors"]},
                            "shard 's-3.safetensors' listed in weight_map does not exist"),
    "index-shard-is-dir": ({IDX: index(with_map(c_w="d")), **SHARDS, "d/x": b""}, "not a regular file"),
    "index-self": ({IDX: index(with_map(c_w=IDX)), **SHARDS}, IDX),
    "index-not-json": ({IDX: b'{"weight_map": {', **SHARDS}, "index is not valid JSON"),
    "index-no-weight-map": ({IDX: b'{"metadata": {}}', **SHARDS}, 'index has no "weight_map" object'),
    "index-weight-map-array": ({IDX: b'{"weight_map": ["s-1.safetensors"]}', **SHARDS}, 'index has no "weight_map" object'),
    "index-empty-weight-map": ({IDX: b'{"weight_map": {}}', **SHARDS}, 'index "weight_map" is empty'),
    "index-value-not-string": ({IDX: index(with_map(c_w=3)), **SHARDS}, "tensor 'c.w': weight_map value is not a string"),
    "index-duplicate-key": ({IDX: b'{"weight_map": {"a.w": "s-1.safetensors", "a.w": "s-1.safetensors"}}', **SHARDS}, "duplicate"),
    "index-unlisted-tensor": ({IDX: index(with_map(a_b=None)), **SHARDS}, "tensor 'a.b' is not listed in the index"),
    "index-listed-missing": ({IDX: index(with_map(x_y="s-2.safetensors")), **SHARDS}, "tensor 'x.y' is listed but not in shard 's-2.safetensors'"),
    "index-wrong-shard": ({IDX: index(with_map(a_b="s-2.safetensors")), **SHARDS}, "tensor 'a.b' is listed in the index"),
    "index-bad-shard": ({IDX: index(WM), **SHARDS, "s-2.safetensors": st_raw(2**64 - 1, b"{}")}, "s-2.safetensors: byte 0: header size 18446744073709551615 exceeds"),
    "index-nested": ({IDX: b"[" * 3000, **SHARDS}, "index is not valid JSON"),
}


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_cases():
    shutil.rmtree(CASES, ignore_errors=True)
    os.makedirs(CASES)
    for name, (data, expect) in FILES.items():
        write(os.path.join(CASES, name + ".safetensors"), data)
        write(os.path.join(CASES, name + ".expect"), (expect + "\n").encode())
    for name, (files, expect) in DIRS.items():
        for fname, data in files.items():
            write(os.path.join(CASES, name, fname), data)
        write(os.path.join(CASES, name + ".expect"), (expect + "\n").encode())


# ---- seed corpora ------------------------------------------------------------

SELECT = [
    b"model.layers.*",
    b"model.layers.1*",
    b"model/layers/0/",
    b"/",
    b"**",
    b"enc/model/layers/*/mlp/**",
    b"dec/sub/conv/*",
    b"a.b a.b.c\nx..y\t.lead",
    b"a/b/%t",
    b"p%25q/r s%2Ft/u",
    b"*.?",
    b"lm_head.weight\n\n\n",
    b"?" * 40,
    b"*" * 300,
    b"x" * 4096,
    b"model.layers.?.self_attn.q_proj.weight zero",
    b"\xc3\xbcn\xc3\xaf.*",
    b"L*%~0/w",
    b"nothing.matches",
    b"a*b*c*d*e*f*g\0abcdefg",
    b"**/weight\0model/layers/0/q/weight",
]

NAMES = [
    b"model.embed_tokens.weight\nmodel.layers.0.self_attn.q_proj.weight\nlm_head.weight",
    b"a.b\na.b.c\na",
    b"a..b\n.a\na.\n\n.",
    b"%\n%25\n%t\n%2F\na/b\n%2E",
    b"../../etc/passwd\n..\n.\n/\n//",
    b".stfs\n.stfs.control\nstfs",
    b"x" * 300 + b"\n" + b"x" * 300 + b"y\n" + b"x" * 240 + b"%" + b"z" * 30,
    b"\xc3\xa9" * 130 + b"\n" + b"\xc3\xa9" * 131,
    b"a\0b\nc",
    b"w\nw",
    b"unet\tconv.weight\nvae\tconv.weight\nvae/x\tw",
    b"a\tb\n\ta.b",
    b"a/b\tc\na\tb.c",
    b"1.2.10.3\n1.2.9.3\n1.2.09.3",
    b"layers.0\nlayers.00\nlayers.000",
    b"",
]

INDEX_EXTRA = [
    b'{"metadata":{"total_size":1},"weight_map":{"a":"x.safetensors"}}',
    b'{"weight_map":{"a":"x.safetensors","b":"y.safetensors","c":"x.safetensors"}}',
    b'{"weight_map":{"a":"x/y"}}',
    b'{"weight_map":{"a":1}}',
    b'{"weight_map":{"\\u00e9":"\\u00e9.safetensors"}}',
    b'{"weight_map":{"a":".."},"weight_map":{}}',
    b"[]",
    b"",
]


def write_corpora():
    for t in ("header", "index", "select", "names"):
        shutil.rmtree(os.path.join(CORPUS, t), ignore_errors=True)
        os.makedirs(os.path.join(CORPUS, t))
    for name, (data, _) in FILES.items():
        write(os.path.join(CORPUS, "header", name), data)
    for name, (files, _) in DIRS.items():
        write(os.path.join(CORPUS, "index", name), files[IDX])
    for i, data in enumerate(INDEX_EXTRA):
        write(os.path.join(CORPUS, "index", "extra-%02d" % i), data)
    for i, data in enumerate(SELECT):
        write(os.path.join(CORPUS, "select", "seed-%02d" % i), data)
    for i, data in enumerate(NAMES):
        write(os.path.join(CORPUS, "names", "seed-%02d" % i), data)


if __name__ == "__main__":
    write_cases()
    write_corpora()
    for t in ("header", "index", "select", "names"):
        print("corpus/%s: %d files" % (t, len(os.listdir(os.path.join(CORPUS, t)))))
    print("cases: %d files, %d directories" % (len(FILES), len(DIRS)))
