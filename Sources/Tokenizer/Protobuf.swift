// The slice of the protobuf wire format (proto2) that a SentencePiece ModelProto needs, read and written by
// hand since the project takes no packages. Unknown fields are skipped; every malformed input throws.

public struct ProtobufError: Error, CustomStringConvertible, Equatable {
    public let offset: Int
    public let message: String
    public var description: String { "malformed protobuf at byte \(offset): \(message)" }
}

struct ProtoReader {
    enum WireType: UInt64 { case varint = 0, fixed64 = 1, lengthDelimited = 2, fixed32 = 5 }

    let bytes: [UInt8]
    private(set) var position: Int
    let end: Int

    init(_ bytes: [UInt8], range: Range<Int>? = nil) {
        self.bytes = bytes
        position = range?.lowerBound ?? 0
        end = range?.upperBound ?? bytes.count
    }

    var atEnd: Bool { position >= end }

    mutating func varint() throws -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard position < end else { throw ProtobufError(offset: position, message: "varint runs past the end") }
            let b = bytes[position]
            position += 1
            guard shift < 64 else { throw ProtobufError(offset: position, message: "varint longer than 10 bytes") }
            result |= UInt64(b & 0x7f) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
        }
    }

    /// Field number and wire type of the next field.
    mutating func tag() throws -> (field: Int, wire: WireType) {
        let start = position
        let key = try varint()
        guard let wire = WireType(rawValue: key & 7) else {
            throw ProtobufError(offset: start, message: "unsupported wire type \(key & 7)")
        }
        let field = key >> 3
        guard field > 0, field < 1 << 29 else {
            throw ProtobufError(offset: start, message: "invalid field number \(field)")
        }
        return (Int(field), wire)
    }

    mutating func lengthDelimited() throws -> Range<Int> {
        let start = position
        let length = try varint()
        guard length <= UInt64(end - position) else {
            throw ProtobufError(offset: start, message: "length \(length) runs past the end")
        }
        let range = position..<(position + Int(length))
        position = range.upperBound
        return range
    }

    mutating func fixed32() throws -> UInt32 {
        guard end - position >= 4 else { throw ProtobufError(offset: position, message: "fixed32 runs past the end") }
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(bytes[position + i]) << (8 * UInt32(i)) }
        position += 4
        return v
    }

    mutating func float() throws -> Float { Float(bitPattern: try fixed32()) }

    mutating func skip(_ wire: WireType) throws {
        switch wire {
        case .varint: _ = try varint()
        case .fixed64:
            guard end - position >= 8 else {
                throw ProtobufError(offset: position, message: "fixed64 runs past the end")
            }
            position += 8
        case .lengthDelimited: _ = try lengthDelimited()
        case .fixed32: _ = try fixed32()
        }
    }

    /// Checks the wire type a known field must have.
    func expect(_ wire: WireType, _ expected: WireType, field: Int) throws {
        if wire != expected {
            throw ProtobufError(
                offset: position,
                message: "field \(field) has wire type \(wire.rawValue), expected \(expected.rawValue)")
        }
    }
}

struct ProtoWriter {
    private(set) var bytes: [UInt8] = []

    mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7f) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func tag(_ field: Int, _ wire: ProtoReader.WireType) { varint(UInt64(field) << 3 | wire.rawValue) }

    /// int32 fields: negative values are ten-byte varints, as protobuf encodes them.
    mutating func int(_ field: Int, _ value: Int) {
        tag(field, .varint)
        varint(UInt64(bitPattern: Int64(value)))
    }

    mutating func bool(_ field: Int, _ value: Bool) { int(field, value ? 1 : 0) }

    mutating func float(_ field: Int, _ value: Float) {
        tag(field, .fixed32)
        let bits = value.bitPattern
        for i in 0..<4 { bytes.append(UInt8((bits >> (8 * UInt32(i))) & 0xff)) }
    }

    mutating func bytes(_ field: Int, _ value: [UInt8]) {
        tag(field, .lengthDelimited)
        varint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    mutating func string(_ field: Int, _ value: String) { bytes(field, Array(value.utf8)) }
}
