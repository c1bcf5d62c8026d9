// The Thrift compact protocol, read-only: what Parquet's footer and page headers are written in. A struct is a
// run of fields, each a header byte (a field-id delta and a type) and a value, ended by a zero byte; integers
// are zigzag varints. Fields a reader does not ask for are skipped by type, so newer writers' additions
// (statistics, page indexes, encryption fields) pass through. Every read is bounds-checked: a header cut off
// by the end of its buffer throws `.truncated`, which the page reader answers by reading more.

enum ThriftError: Error, Equatable {
    /// The bytes ended inside a value.
    case truncated
    /// Not compact-protocol data (an unknown type, an absurd length or nesting).
    case malformed(String)
}

struct ThriftReader {
    enum FieldType: UInt8 {
        case boolTrue = 1, boolFalse, byte, i16, i32, i64, double, binary, list, set, map, structure
    }

    private let bytes: UnsafeRawBufferPointer
    private(set) var position: Int
    private var depth = 0

    init(_ bytes: UnsafeRawBufferPointer, position: Int = 0) {
        self.bytes = bytes
        self.position = position
    }

    // MARK: - Values

    mutating func byte() throws -> UInt8 {
        guard position < bytes.count else { throw ThriftError.truncated }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func varint() throws -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let b = try byte()
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
            guard shift < 64 else { throw ThriftError.malformed("a varint longer than 10 bytes") }
        }
    }

    mutating func int() throws -> Int64 {
        let v = try varint()
        return Int64(bitPattern: (v >> 1) ^ (0 &- (v & 1)))
    }

    mutating func int32() throws -> Int32 {
        let v = try int()
        guard let narrow = Int32(exactly: v) else { throw ThriftError.malformed("i32 out of range: \(v)") }
        return narrow
    }

    mutating func binary() throws -> UnsafeRawBufferPointer {
        let length = try varint()
        guard length <= UInt64(bytes.count - position) else { throw ThriftError.truncated }
        defer { position += Int(length) }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<position + Int(length)])
    }

    mutating func string() throws -> String { String(decoding: try binary(), as: UTF8.self) }

    /// A list's element type and count; the elements follow.
    mutating func listHeader() throws -> (FieldType, Int) {
        let header = try byte()
        var count = Int(header >> 4)
        if count == 15 {
            let long = try varint()
            guard long <= UInt64(bytes.count - position) else { throw ThriftError.truncated }  // ≥ 1 byte each
            count = Int(long)
        }
        return (try type(header & 0x0F), count)
    }

    mutating func list<T>(_ element: (inout ThriftReader) throws -> T) throws -> [T] {
        let (_, count) = try listHeader()
        var out: [T] = []
        out.reserveCapacity(min(count, 1 << 16))
        for _ in 0..<count { out.append(try element(&self)) }
        return out
    }

    /// Calls `field` with each field's id and type; `field` reads the value and returns true, or returns false
    /// to have it skipped.
    mutating func structure(_ field: (inout ThriftReader, Int16, FieldType) throws -> Bool) throws {
        depth += 1
        defer { depth -= 1 }
        guard depth < 64 else { throw ThriftError.malformed("structs nested more than 64 deep") }
        var id: Int16 = 0
        while true {
            let header = try byte()
            if header == 0 { return }
            let delta = header >> 4
            if delta == 0 {
                guard let long = Int16(exactly: try int()) else {
                    throw ThriftError.malformed("a field id out of range")
                }
                id = long
            } else {
                id &+= Int16(delta)
            }
            let kind = try type(header & 0x0F)
            if try !field(&self, id, kind) { try skip(kind) }
        }
    }

    /// A bool field's value is in its type (compact protocol), so it is read from that.
    static func bool(_ type: FieldType) -> Bool { type == .boolTrue }

    // MARK: - Skipping

    private func type(_ code: UInt8) throws -> FieldType {
        guard let kind = FieldType(rawValue: code) else { throw ThriftError.malformed("unknown type \(code)") }
        return kind
    }

    mutating func skip(_ kind: FieldType, inContainer: Bool = false) throws {
        // Containers nest like structs: the same bound keeps a crafted footer from exhausting the stack.
        depth += 1
        defer { depth -= 1 }
        guard depth < 64 else { throw ThriftError.malformed("values nested more than 64 deep") }
        switch kind {
        case .boolTrue, .boolFalse: if inContainer { _ = try byte() }  // a bool field's value is its type
        case .byte: _ = try byte()
        case .i16, .i32, .i64: _ = try varint()
        case .double:
            guard bytes.count - position >= 8 else { throw ThriftError.truncated }
            position += 8
        case .binary: _ = try binary()
        case .list, .set:
            let (element, count) = try listHeader()
            for _ in 0..<count { try skip(element, inContainer: true) }
        case .map:
            let count = try varint()
            guard count <= UInt64(bytes.count - position) else { throw ThriftError.truncated }
            guard count > 0 else { return }
            let types = try byte()
            let (key, value) = (try type(types >> 4), try type(types & 0x0F))
            for _ in 0..<count {
                try skip(key, inContainer: true)
                try skip(value, inContainer: true)
            }
        case .structure: try structure { _, _, _ in false }
        }
    }
}
