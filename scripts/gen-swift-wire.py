#!/usr/bin/env python3
"""Generates the Swift wire glue of ShardRankWire from proto/ (run by scripts/gen-proto).

Input: a serialized google.protobuf.FileDescriptorSet with source info (protoc-c
--descriptor_set_out --include_source_info). Output: one Swift file per .proto under
Sources/ShardRankWire/Generated/: a value type per message (its properties, a memberwise
initialiser, `decode(_:)` through protobuf-c and `encoded()` into a gRPC-framed buffer), a Swift
enum per proto enum, and a typed method descriptor (`RPCCore.Method<Request, Response>`) per RPC,
which both the services (registration) and the client stubs use. protobuf-c stays the codec.

Usage: gen-swift-wire.py DESCRIPTOR_SET OUT_DIR

What Swift cannot read off the .proto (a Swift name that differs from the proto one, a default
other than the proto zero value, what to do with an enum value this build does not know, a bytes
field that holds floats or a delta-varint id set, a hand-written fast path) is in SWIFT below:
the only place besides the .proto to touch when a field needs more than the defaults.
Self-contained (no protobuf package needed): it reads the descriptor set with its own decoder.
"""
import os
import re
import sys

# --- What the .proto does not say ------------------------------------------------------------
# Per fully qualified proto type:
#   swift: the Swift type name (default: the proto name).
#   decode / encode: the names of the decode and encode functions (default decode / encoded).
#     A Swift type shared by several messages (ItemsResponse) gets one pair per message.
#   fast_decode: a hand-written `static func NAME(_ bytes: [UInt8]) -> Self?` tried first;
#     nil falls back to protobuf-c (`decodeWithProtobufC`), the reference.
#   hand_encoded: `encoded()` is hand-written (a zero-copy path); the generated one is skipped.
#   hashable: False: only Sendable is declared (a hand-written extension adds Hashable).
#   init: False: no memberwise initialiser (hand-written ones instead).
#   init_defaults: False: the memberwise initialiser has no default arguments.
#   init_order: the Swift parameter order of the initialiser (default: the proto field order).
#   validate: the decoded value is checked by a hand-written `func validateDecoded() throws(RPCError)`.
#   fields: per proto field name:
#     swift: the Swift property name (default: camelCase; _id(s) -> ID(s), _us -> Micros, _s -> Seconds)
#     default: the initialiser's default (Swift expression; default: the proto zero value)
#     enum: what an enum value outside the Swift enum decodes as: "zero" (the first case, default),
#       "strict" (INVALID_ARGUMENT naming the field), "optional" (nil; the property is optional),
#       "raw" (the property is the UInt32 as sent)
#     as: "floats" (bytes of little-endian f32: [Float]; "floats-lenient" ignores a partial
#       trailing float), "packed_ids" (bytes of a delta-varint id set: PackedIDs, validated)
#     hidden: a Swift expression encoding the field from the other properties (no property);
#       decode_check: a Swift statement run after decoding (the C value is `p`)
SWIFT = {
    "grpc.health.v1.HealthCheckResponse.ServingStatus": {"swift": "ServingStatus"},
    "shardrank.v1.LookupRequest": {"fast_decode": "decodeCanonical", "fields": {"dtype": {"enum": "strict"}}},
    "shardrank.v1.LookupResponse": {"hand_encoded": True,
                                    "fields": {"dtype": {"enum": "strict"}, "shard_count": {"default": "1"}}},
    "shardrank.v1.SearchRequest": {"validate": True, "fields": {
        "queries": {"as": "floats"}, "mode": {"enum": "strict"}, "exclude_sorted": {"as": "packed_ids"}}},
    "shardrank.v1.SearchHits": {"fields": {"scales": {"as": "floats-lenient"}}},
    "shardrank.v1.SearchResponse": {"fields": {"shard_count": {"default": "1"}, "mode": {"default": ".exact"}}},
    "shardrank.v1.ListsResponse": {"fields": {"shard_count": {"default": "1"}}},
    "shardrank.v1.IdsResponse": {"fields": {"shard_count": {"default": "1"}}},
    "shardrank.v1.ProfilesRequest": {"fields": {"table": {"default": '"profiles"'}}},
    "shardrank.v1.ProfilesResponse": {"fields": {"shard_count": {"default": "1"}}},
    "shardrank.v1.UserProfile": {
        "init_order": ["userID", "recentItemIDs", "history", "topGenres", "country"],
        "fields": {"history": {"as": "packed_ids"},
                   "history_count": {"hidden": "UInt32(history.count)",
                                     "decode_check": "try UserProfile.checkHistoryCount(history, p.history_count)"}}},
    "shardrank.v1.AttributesRequest": {"fields": {"table": {"default": '"attributes"'}}},
    "shardrank.v1.AttributesResponse": {"fields": {"shard_count": {"default": "1"}}},
    "shardrank.v1.Context": {"swift": "RecommendContext"},
    "shardrank.v1.RecommendRequest": {"fields": {"k": {"default": "10"},
                                                 "user_vector": {"enum": "optional", "default": ".auto"}}},
    "shardrank.v1.CandidateFeatures": {"hashable": False},
    "shardrank.v1.Event": {"init_defaults": False, "fields": {"kind": {"swift": "kindValue", "enum": "raw"}}},
    "shardrank.v1.SimilarRequest": {"fields": {"k": {"default": "10"}}},
    "shardrank.v1.RankResponse": {"swift": "ItemsResponse", "decode": "decodeRank", "encode": "encodedAsRank"},
    "shardrank.v1.SimilarResponse": {"swift": "ItemsResponse", "decode": "decodeSimilar", "encode": "encodedAsSimilar"},
}
# The files whose messages are generated (reflection's messages stay hand-written in Reflection.swift).
FILES = ["grpc/health/v1/health.proto", "shardrank/v1/common.proto", "shardrank/v1/shard.proto",
         "shardrank/v1/recommender.proto"]
HEADER = "// Generated by scripts/gen-proto (scripts/gen-swift-wire.py) from {}. Do not edit.\n"


# --- A minimal protobuf reader for descriptor.proto ------------------------------------------
def read_varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        if c < 0x80:
            return v, i
        shift += 7


def fields(b):
    i = 0
    while i < len(b):
        key, i = read_varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(b, i)
        elif wt == 2:
            n, i = read_varint(b, i)
            v = b[i:i + n]
            i += n
        elif wt == 1:
            v = b[i:i + 8]
            i += 8
        elif wt == 5:
            v = b[i:i + 4]
            i += 4
        else:
            raise ValueError("unsupported wire type %d" % wt)
        yield num, v


def text(v):
    return bytes(v).decode("utf-8")


def packed_ints(v):
    out, i = [], 0
    while i < len(v):
        x, i = read_varint(v, i)
        out.append(x)
    return out


class Field:
    def __init__(self, b):
        self.name, self.number, self.label, self.type, self.type_name = "", 0, 1, 0, ""
        for num, v in fields(b):
            if num == 1: self.name = text(v)
            elif num == 3: self.number = v
            elif num == 4: self.label = v
            elif num == 5: self.type = v
            elif num == 6: self.type_name = text(v).lstrip(".")
        self.repeated = self.label == 3
        self.comment = ""


class Enum:
    def __init__(self, b, scope):
        self.values, self.comment = [], ""
        for num, v in fields(b):
            if num == 1: self.name = text(v)
            elif num == 2:
                name, number = "", 0
                for n2, v2 in fields(v):
                    if n2 == 1: name = text(v2)
                    elif n2 == 2: number = v2
                self.values.append([name, number, ""])
        self.full = scope + self.name


class Message:
    def __init__(self, b, scope, messages, enums):
        self.fields, self.comment = [], ""
        nested, nested_enums = [], []
        for num, v in fields(b):
            if num == 1: self.name = text(v)
            elif num == 2: self.fields.append(Field(v))
            elif num == 3: nested.append(v)
            elif num == 4: nested_enums.append(v)
        self.full = scope + self.name
        self.nested_enums = [Enum(e, self.full + ".") for e in nested_enums]
        self.nested = [Message(m, self.full + ".", messages, enums) for m in nested]
        messages[self.full] = self
        for e in self.nested_enums: enums[e.full] = e


class Method:
    def __init__(self, b):
        self.client_streaming = self.server_streaming = False
        for num, v in fields(b):
            if num == 1: self.name = text(v)
            elif num == 2: self.input = text(v).lstrip(".")
            elif num == 3: self.output = text(v).lstrip(".")
            elif num == 5: self.client_streaming = bool(v)
            elif num == 6: self.server_streaming = bool(v)
        self.comment = ""


class Service:
    def __init__(self, b, scope):
        self.methods, self.comment = [], ""
        for num, v in fields(b):
            if num == 1: self.name = text(v)
            elif num == 2: self.methods.append(Method(v))
        self.full = scope + self.name


class File:
    def __init__(self, b, messages, enums):
        self.package, self.messages, self.enums, self.services, locations = "", [], [], [], []
        raw_m, raw_e, raw_s = [], [], []
        for num, v in fields(b):
            if num == 1: self.name = text(v)
            elif num == 2: self.package = text(v)
            elif num == 4: raw_m.append(v)
            elif num == 5: raw_e.append(v)
            elif num == 6: raw_s.append(v)
            elif num == 9:
                for n2, loc in fields(v):
                    if n2 == 1: locations.append(loc)
        scope = self.package + "." if self.package else ""
        self.messages = [Message(m, scope, messages, enums) for m in raw_m]
        self.enums = [Enum(e, scope) for e in raw_e]
        for e in self.enums: enums[e.full] = e
        self.services = [Service(s, scope) for s in raw_s]
        for loc in locations:
            path, comment = [], ""
            for n2, v in fields(loc):
                if n2 == 1: path = packed_ints(v)
                elif n2 == 3 and not comment: comment = text(v)
                elif n2 == 4 and not comment: comment = text(v)
            if comment.strip():
                self.attach(path, comment.strip())

    def attach(self, path, comment):
        try:
            if path[0] == 4:
                m = self.messages[path[1]]
                rest = path[2:]
                while len(rest) >= 2 and rest[0] == 3:
                    m = m.nested[rest[1]]
                    rest = rest[2:]
                if not rest: m.comment = comment
                elif rest[0] == 2 and len(rest) == 2: m.fields[rest[1]].comment = comment
                elif rest[0] == 4:
                    e = m.nested_enums[rest[1]]
                    if len(rest) == 2: e.comment = comment
                    elif len(rest) == 4: e.values[rest[3]][2] = comment
            elif path[0] == 5:
                e = self.enums[path[1]]
                if len(path) == 2: e.comment = comment
                elif len(path) == 4: e.values[path[3]][2] = comment
            elif path[0] == 6:
                s = self.services[path[1]]
                if len(path) == 2: s.comment = comment
                elif len(path) == 4: s.methods[path[3]].comment = comment
        except IndexError:
            pass


# --- Naming ----------------------------------------------------------------------------------
def camel_to_lower(name):  # protoc-c's CamelToLower
    out = ""
    for i, c in enumerate(name):
        if c.isupper() and i > 0 and not name[i - 1].isupper():
            out += "_"
        out += c.lower()
    return out


def c_struct(full):  # protoc-c's FullNameToC
    return "__".join(p[0].upper() + p[1:] for p in full.split("."))


def c_func(full):  # protoc-c's FullNameToLower
    return "__".join(camel_to_lower(p) for p in full.split("."))


def swift_field_name(name):
    parts = name.split("_")
    out = []
    for i, p in enumerate(parts):
        if p == "id": w = "ID"
        elif p == "ids": w = "IDs"
        elif p == "us" and i == len(parts) - 1 and i > 0: w = "Micros"
        elif p == "s" and i == len(parts) - 1 and i > 0: w = "Seconds"
        elif i == 0: w = p
        else: w = p[:1].upper() + p[1:]
        out.append(w)
    if out[0] in ("ID", "IDs"): out[0] = out[0].lower()
    return "".join(out)


def enum_case_name(value, enum):
    prefix = camel_to_lower(enum.name).upper() + "_"
    if value.startswith(prefix): value = value[len(prefix):]
    words = value.lower().split("_")
    name = words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])
    return name


SCALARS = {1: "Double", 2: "Float", 3: "Int64", 4: "UInt64", 5: "Int32", 6: "UInt64", 7: "UInt32", 8: "Bool",
           9: "String", 12: "[UInt8]", 13: "UInt32", 15: "Int32", 16: "Int64", 17: "Int32", 18: "Int64"}
T_BOOL, T_STRING, T_MESSAGE, T_BYTES, T_ENUM = 8, 9, 11, 12, 14


def doc(comment, indent):
    if not comment: return ""
    return "".join("%s/// %s\n" % (indent, line.strip()) if line.strip() else "%s///\n" % indent
                   for line in comment.splitlines())


# --- Code generation -------------------------------------------------------------------------
class Gen:
    def __init__(self, messages, enums):
        self.messages, self.enums = messages, enums

    def conf(self, full):
        return SWIFT.get(full, {})

    def swift_type_name(self, full):
        return self.conf(full).get("swift", full.split(".")[-1])

    def fconf(self, m, f):
        return self.conf(m.full).get("fields", {}).get(f.name, {})

    def fname(self, m, f):
        return self.fconf(m, f).get("swift", swift_field_name(f.name))

    def zero_case(self, enum_full):
        e = self.enums[enum_full]
        return "." + enum_case_name(e.values[0][0], e)

    def ftype(self, m, f):
        fc = self.fconf(m, f)
        if fc.get("as", "").startswith("floats"): return "[Float]"
        if fc.get("as") == "packed_ids": return "PackedIDs"
        if f.type == T_MESSAGE: base = self.swift_type_name(f.type_name)
        elif f.type == T_ENUM:
            policy = fc.get("enum", "zero")
            if policy == "raw": base = "UInt32"
            else: base = self.swift_type_name(f.type_name)
            if policy == "optional" and not f.repeated: return base + "?"
        else: base = SCALARS[f.type]
        if f.repeated: return "[%s]" % base
        if f.type == T_MESSAGE: return base + "?"
        return base

    def fdefault(self, m, f):
        fc = self.fconf(m, f)
        if "default" in fc: return fc["default"]
        if fc.get("as", "").startswith("floats") or f.repeated: return "[]"
        if fc.get("as") == "packed_ids": return "PackedIDs()"
        if f.type == T_MESSAGE: return "nil"
        if f.type == T_ENUM:
            policy = fc.get("enum", "zero")
            if policy == "raw": return "0"
            if policy == "optional": return "nil"
            return self.zero_case(f.type_name)
        if f.type == T_STRING: return '""'
        if f.type == T_BYTES: return "[]"
        if f.type == T_BOOL: return "false"
        return "0"

    def note(self, m, f):
        """What the Swift property adds to the proto comment (its SWIFT entry)."""
        fc = self.fconf(m, f)
        a, policy = fc.get("as", ""), fc.get("enum") if f.type == T_ENUM else None
        if a.startswith("floats"): return "Swift: the `bytes` as little-endian f32s."
        if a == "packed_ids": return "Swift: the `bytes` as a delta-varint id set, validated when decoded."
        if policy == "strict": return "Swift: a value outside the enum fails the decode (INVALID_ARGUMENT)."
        if policy == "optional": return "Swift: a value outside the enum decodes as nil."
        if policy == "raw": return "Swift: the enum's value as sent, known or not."
        return ""

    def visible(self, m):
        return [f for f in m.fields if "hidden" not in self.fconf(m, f)]

    # An enum ---------------------------------------------------------------------------------
    def enum(self, e):
        name = self.swift_type_name(e.full)
        out = doc(e.comment, "") or "/// proto `%s`.\n" % e.full
        out += "public enum %s: UInt32, Sendable, Hashable, CaseIterable, CustomStringConvertible {\n" % name
        for v, n, c in e.values:
            out += doc(c, "    ") + "    case %s = %d\n" % (enum_case_name(v, e), n)
        out += "\n    public var description: String {\n        switch self {\n"
        for v, n, c in e.values:
            case = enum_case_name(v, e)
            out += '        case .%s: "%s"\n' % (case, case)
        out += "        }\n    }\n}\n"
        return out

    # A message -------------------------------------------------------------------------------
    def decode_expr(self, m, f, p):
        fc = self.fconf(m, f)
        label = "%s.%s" % (self.swift_type_name(m.full), f.name)
        c = "%s.%s" % (p, f.name)
        a = fc.get("as", "")
        if a.startswith("floats"):
            return "try ProtoC.floats(%s, field: %s)" % (c, "nil" if a == "floats-lenient" else '"%s"' % label)
        if a == "packed_ids":
            return 'try ProtoC.packedIDs(%s, field: "%s")' % (c, label)
        if f.repeated:
            n = "%s.n_%s" % (p, f.name)
            if f.type == T_STRING: return "(0 ..< %s).map { ProtoC.string(%s![$0]) }" % (n, c)
            if f.type == T_BYTES: return "(0 ..< %s).map { ProtoC.bytes(%s![$0]) }" % (n, c)
            if f.type == T_BOOL: return "ProtoC.array(%s, %s).map { $0 != 0 }" % (c, n)
            if f.type == T_ENUM:
                policy = fc.get("enum", "zero")
                et = self.swift_type_name(f.type_name)
                if policy == "raw": return "ProtoC.array(%s, %s).map(\\.rawValue)" % (c, n)
                return "ProtoC.array(%s, %s).map { %s(rawValue: $0.rawValue) ?? %s }" % (c, n, et, self.zero_case(f.type_name))
            if f.type == T_MESSAGE: return None  # a loop (typed throws)
            return "ProtoC.array(%s, %s)" % (c, n)
        if f.type == T_STRING: return "ProtoC.string(%s)" % c
        if f.type == T_BYTES: return "ProtoC.bytes(%s)" % c
        if f.type == T_BOOL: return "%s != 0" % c
        if f.type == T_ENUM:
            policy = fc.get("enum", "zero")
            et = self.swift_type_name(f.type_name)
            if policy == "raw": return "%s.rawValue" % c
            if policy == "optional": return "%s(rawValue: %s.rawValue)" % (et, c)
            if policy == "strict": return 'try ProtoC.enumValue(%s.rawValue, "%s", as: %s.self)' % (c, label, et)
            return "%s(rawValue: %s.rawValue) ?? %s" % (et, c, self.zero_case(f.type_name))
        if f.type == T_MESSAGE: return None
        return c

    def encode_lines(self, m, f, x, mv):
        """Lines setting field f of the C message `mv` from the Swift value `x`."""
        fc = self.fconf(m, f)
        c = "%s.%s" % (mv, f.name)
        if "hidden" in fc: return ["%s = %s" % (c, fc["hidden"])]
        a = fc.get("as", "")
        if a.startswith("floats"): return ["if !%s.isEmpty { %s = arena.binary(%s) }" % (x, c, x)]
        if a == "packed_ids": return ["if !%s.isEmpty { %s = arena.binary(%s.bytes) }" % (x, c, x)]
        if f.repeated:
            n = "%s.n_%s = %s.count" % (mv, f.name, x)
            if f.type == T_STRING: v = "arena.array(%s.map { Optional(arena.string($0)) })" % x
            elif f.type == T_BYTES: v = "arena.array(%s.map { arena.binary($0) })" % x
            elif f.type == T_BOOL: v = "arena.array(%s.map { $0 ? 1 : 0 })" % x
            elif f.type == T_ENUM:
                ct = c_struct(f.type_name)
                raw = "$0" if fc.get("enum") == "raw" else "$0.rawValue"
                v = "arena.array(%s.map { %s(rawValue: %s) })" % (x, ct, raw)
            elif f.type == T_MESSAGE:
                ct = c_struct(f.type_name)
                v = "arena.pointerArray(%s.map { (v) -> %s in v.cMessage(in: arena) })" % (x, ct)
            else: v = "arena.array(%s)" % x
            return [n, "%s = %s" % (c, v)]
        if f.type == T_STRING: return ["if !%s.isEmpty { %s = arena.string(%s) }" % (x, c, x)]
        if f.type == T_BYTES: return ["if !%s.isEmpty { %s = arena.binary(%s) }" % (x, c, x)]
        if f.type == T_BOOL: return ["%s = %s ? 1 : 0" % (c, x)]
        if f.type == T_ENUM:
            ct = c_struct(f.type_name)
            policy = fc.get("enum", "zero")
            if policy == "raw": return ["%s = %s(rawValue: %s)" % (c, ct, x)]
            if policy == "optional":
                return ["%s = %s(rawValue: (%s ?? %s).rawValue)" % (c, ct, x, self.zero_case(f.type_name))]
            return ["%s = %s(rawValue: %s.rawValue)" % (c, ct, x)]
        if f.type == T_MESSAGE:
            ct = c_struct(f.type_name)
            return ["if let v = %s { let cv: %s = v.cMessage(in: arena); %s = arena.object(cv) }" % (x, ct, c)]
        return ["%s = %s" % (c, x)]

    def message(self, m, first):
        """The Swift struct (when `first`: the first proto message of its Swift type) and its codec."""
        conf = self.conf(m.full)
        name = self.swift_type_name(m.full)
        cs, cf = c_struct(m.full), c_func(m.full)
        out = ""
        if first:
            out += doc(m.comment, "") or "/// proto `%s`.\n" % m.full
            conforms = "Sendable, Hashable" if conf.get("hashable", True) else "Sendable"
            out += "public struct %s: %s {\n" % (name, conforms)
            for f in self.visible(m):
                out += doc(f.comment, "    ") + doc(self.note(m, f), "    ")
                out += "    public var %s: %s\n" % (self.fname(m, f), self.ftype(m, f))
            if conf.get("init", True):
                params = self.visible(m)
                order = conf.get("init_order")
                if order:
                    by = {self.fname(m, f): f for f in params}
                    assert sorted(order) == sorted(by), (m.full, order, list(by))
                    params = [by[n] for n in order]
                dflt = conf.get("init_defaults", True)
                sig = ", ".join("%s: %s%s" % (self.fname(m, f), self.ftype(m, f), " = " + self.fdefault(m, f) if dflt else "")
                                for f in params)
                out += "\n    public init(%s) {\n" % sig
                for f in params:
                    out += "        self.%s = %s\n" % ((self.fname(m, f),) * 2)
                out += "    }\n"
            out += "}\n\n"
        # The codec.
        out += "extension %s {\n" % name
        out += "    /// Copies a `%s` out of protobuf-c's C struct.\n" % m.full
        out += "    init(cMessage p: %s) throws(RPCError) {\n" % cs
        for f in self.visible(m):
            e = self.decode_expr(m, f, "p")
            fn = self.fname(m, f)
            if e is not None:
                out += "        self.%s = %s\n" % (fn, e)
            elif f.repeated:
                t = self.swift_type_name(f.type_name)
                out += "        var %s: [%s] = []\n" % (fn, t)
                out += "        %s.reserveCapacity(p.n_%s)\n" % (fn, f.name)
                out += "        for i in 0 ..< p.n_%s { %s.append(try %s(cMessage: p.%s![i]!.pointee)) }\n" % (f.name, fn, t, f.name)
                out += "        self.%s = %s\n" % (fn, fn)
            else:
                t = self.swift_type_name(f.type_name)
                out += "        if let c = p.%s { self.%s = try %s(cMessage: c.pointee) } else { self.%s = nil }\n" % (f.name, fn, t, fn)
        for f in m.fields:
            chk = self.fconf(m, f).get("decode_check")
            if chk: out += "        %s\n" % chk
        if conf.get("validate"):
            out += "        try validateDecoded()\n"
        out += "    }\n\n"
        out += "    /// The C struct protobuf-c packs, its strings and arrays held by `arena`.\n"
        out += "    func cMessage(in arena: CArena) -> %s {\n" % cs
        out += "        var m = %s()\n        %s__init(&m)\n" % (cs, cf)
        for f in m.fields:
            x = "self." + self.fname(m, f) if "hidden" not in self.fconf(m, f) else None
            for line in self.encode_lines(m, f, x, "m"):
                out += "        %s\n" % line
        out += "        return m\n    }\n\n"
        decode = conf.get("decode", "decode")
        encode = conf.get("encode", "encoded")
        unpack = ('ProtoC.unpack(bytes, "%s", unpack: %s__unpack, free: %s__free_unpacked) { (m) throws(RPCError) in try %s(cMessage: m.pointee) }'
                  % (m.full, cf, cf, name))
        out += "    /// Decodes an encoded `%s`.\n" % m.full
        out += "    /// - Throws: `RPCError(.invalidArgument)` when the bytes are not one.\n"
        if conf.get("fast_decode"):
            out += "    public static func %s(_ bytes: [UInt8]) throws(RPCError) -> %s {\n" % (decode, name)
            out += "        if let r = %s(bytes) { return r }\n" % conf["fast_decode"]
            out += "        return try decodeWithProtobufC(bytes)\n    }\n\n"
            out += "    /// The reference decode (protobuf-c), which the fast path must agree with.\n"
            out += "    static func decodeWithProtobufC(_ bytes: [UInt8]) throws(RPCError) -> %s {\n" % name
        else:
            out += "    public static func %s(_ bytes: [UInt8]) throws(RPCError) -> %s {\n" % (decode, name)
        out += "        try %s\n    }\n" % unpack
        if not conf.get("hand_encoded"):
            out += "\n    /// The message, encoded and gRPC-framed for the transport.\n"
            out += "    public func %s() -> FramedMessage {\n" % encode
            out += "        let arena = CArena()\n"
            out += "        var m: %s = cMessage(in: arena)\n" % cs
            out += "        return withExtendedLifetime(arena) { ProtoC.pack(&m) }\n    }\n"
        out += "}\n"
        return out

    def services(self, f):
        out = ""
        for s in f.services:
            enum_name = s.name + "Methods"
            out += doc(s.comment, "") or ""
            out += "/// The methods of `%s`: the typed descriptors its service registers and its client stub calls.\n" % s.full
            out += "public enum %s {\n" % enum_name
            out += '    public static let serviceName = "%s"\n' % s.full
            for md in s.methods:
                req = self.swift_type_name(md.input)
                resp = self.swift_type_name(md.output)
                rdec = self.conf(md.input).get("decode", "decode")
                renc = self.conf(md.input).get("encode", "encoded")
                sdec = self.conf(md.output).get("decode", "decode")
                senc = self.conf(md.output).get("encode", "encoded")
                kind = "serverStreaming" if md.server_streaming else "unary"
                if md.client_streaming: kind = "bidirectionalStreaming" if md.server_streaming else "clientStreaming"
                var = md.name[0].lower() + md.name[1:]
                out += doc(md.comment, "    ")
                out += "    /// `/%s/%s` (%s).\n" % (s.full, md.name, kind)
                out += "    public static let %s = Method<%s, %s>(\n" % (var, req, resp)
                out += '        service: serviceName, method: "%s", kind: .%s,\n' % (md.name, kind)
                out += "        encodeRequest: { $0.%s() }, decodeRequest: { (b) throws(RPCError) in try %s.%s(b) },\n" % (renc, req, rdec)
                out += "        encodeResponse: { $0.%s() }, decodeResponse: { (b) throws(RPCError) in try %s.%s(b) })\n" % (senc, resp, sdec)
            out += "}\n"
        return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    data = open(sys.argv[1], "rb").read()
    messages, enums, files = {}, {}, {}
    for num, v in fields(data):
        if num == 1:
            f = File(v, messages, enums)
            files[f.name] = f
    gen = Gen(messages, enums)
    os.makedirs(sys.argv[2], exist_ok=True)
    declared = set()
    for fname in FILES:
        f = files[fname]
        body = ""
        for e in f.enums:
            body += "\n" + gen.enum(e)

        def walk(m):
            nonlocal body
            for e in m.nested_enums:
                body += "\n" + gen.enum(e)
            name = gen.swift_type_name(m.full)
            body += "\n" + gen.message(m, name not in declared)
            declared.add(name)
            for n in m.nested: walk(n)
        for m in f.messages: walk(m)
        body += ("\n" + gen.services(f)) if f.services else ""
        needs_ids = "PackedIDs" in body
        head = HEADER.format("proto/" + fname)
        head += "internal import CProtobufC\ninternal import CShardRankProto\npublic import RPCCore\n"
        if needs_ids: head += "public import ShardRankIDs\n"
        swift_name = "".join(w[:1].upper() + w[1:] for w in re.split(r"[/_.]", fname[:-len(".proto")]))
        with open(os.path.join(sys.argv[2], swift_name + ".swift"), "w") as out:
            out.write(head + body)


if __name__ == "__main__":
    main()
