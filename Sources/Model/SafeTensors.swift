// safetensors: Hugging Face's tensor file format, read and written.
//
// Layout: an 8-byte little-endian header length n, n bytes of JSON ({name: {dtype, shape, data_offsets}},
// optional "__metadata__"), then the raw little-endian data; offsets are relative to the data section and
// must tile it exactly. We read F32, BF16 and F16 (converted to F32) and I32/I64 (for token ids), and
// write F32, BF16 or F16. Every inconsistency is an error naming the file and the tensor; nothing is trusted.
import Foundation
import Kernels
import Support

public enum SafeTensorsError: Error, CustomStringConvertible, Equatable {
    case unreadable(file: String, reason: String)
    case truncated(file: String, reason: String)
    case badHeader(file: String, reason: String)
    case missingTensor(name: String, file: String)
    case shapeMismatch(name: String, file: String, expected: [Int], actual: [Int])
    case unsupportedDType(name: String, file: String, dtype: String)
    case nonFinite(name: String, file: String, value: Float, index: Int)

    public var description: String {
        switch self {
        case let .unreadable(file, reason): "\(file): cannot read safetensors file: \(reason)"
        case let .truncated(file, reason): "\(file): truncated safetensors file: \(reason); re-download or re-export it"
        case let .badHeader(file, reason): "\(file): invalid safetensors header: \(reason)"
        case let .missingTensor(name, file): "\(file): tensor '\(name)' is missing"
        case let .shapeMismatch(name, file, expected, actual):
            "\(file): tensor '\(name)' has shape \(actual), expected \(expected); does the config match the weights?"
        case let .unsupportedDType(name, file, dtype):
            "\(file): tensor '\(name)' has dtype \(dtype); supported: F32, BF16, F16 (and I32, I64 for ids)"
        case let .nonFinite(name, file, value, index):
            "\(file): tensor '\(name)' holds \(value) at index \(index); the weights are damaged, so nothing was built from them"
        }
    }
}

public struct SafeTensorInfo: Equatable, Sendable {
    public let dtype: String
    public let shape: [Int]
    /// Byte range within the data section.
    public let start: Int
    public let end: Int
    public var count: Int { shape.reduce(1, *) }
}

/// One safetensors file, opened for reading by ranges: the header is parsed whole (names, shapes, offsets, all
/// checked against the file's size), the data is read with pread where it is asked for, a bounded chunk at a
/// time. A rank that owns 1/N of a tensor reads 1/N of its bytes; nothing maps or holds the whole file.
public final class SafeTensorsFile {
    public let path: String
    public let tensors: [String: SafeTensorInfo]
    public let metadata: [String: String]
    private let file: FileReader
    private let dataStart: Int

    static let elementSize: [String: Int] = [
        "F32": 4, "BF16": 2, "F16": 2, "I32": 4, "I64": 8, "F64": 8,
        "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    ]
    /// Elements converted per read: the staging buffer is at most 8 MB (F64), 2 MB for BF16.
    static let chunkElements = 1 << 20

    public init(path: String) throws {
        self.path = path
        do {
            file = try FileReader(path: path)
        } catch let error as FileError {
            throw SafeTensorsError.unreadable(file: path, reason: error.message)
        }
        let fileSize = file.size
        guard fileSize >= 8 else {
            throw SafeTensorsError.truncated(
                file: path, reason: "\(fileSize) bytes, fewer than the 8-byte header length")
        }
        let lengthBytes = try Self.read(file, count: 8, at: 0)
        let headerLength = lengthBytes.enumerated().reduce(UInt64(0)) {
            $0 | UInt64($1.element) << (8 * UInt64($1.offset))
        }
        guard headerLength <= UInt64(fileSize - 8) else {
            throw SafeTensorsError.truncated(
                file: path, reason: "header claims \(headerLength) bytes, file has \(fileSize - 8) after the length")
        }
        dataStart = 8 + Int(headerLength)
        let header = try Self.read(file, count: Int(headerLength), at: 8)
        (tensors, metadata) = try Self.parseHeader(Data(header), dataSize: fileSize - dataStart, path: path)
    }

    private static func parseHeader(
        _ header: Data, dataSize: Int, path: String
    ) throws -> (
        [String: SafeTensorInfo], [String: String]
    ) {
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: header)
        } catch {
            throw SafeTensorsError.badHeader(file: path, reason: "header is not valid JSON")
        }
        guard let object = json as? [String: Any] else {
            throw SafeTensorsError.badHeader(file: path, reason: "header is not a JSON object")
        }
        var tensors: [String: SafeTensorInfo] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in object {
            if name == "__metadata__" {
                for (k, v) in value as? [String: Any] ?? [:] { metadata[k] = v as? String ?? "\(v)" }
                continue
            }
            guard let entry = value as? [String: Any], let dtype = entry["dtype"] as? String,
                let shape = (entry["shape"] as? [Any])?.compactMap({ ($0 as? NSNumber)?.intValue }),
                let offsets = (entry["data_offsets"] as? [Any])?.compactMap({ ($0 as? NSNumber)?.intValue }),
                offsets.count == 2, shape.count == (entry["shape"] as? [Any])?.count
            else {
                throw SafeTensorsError.badHeader(
                    file: path, reason: "tensor '\(name)' lacks dtype, shape or data_offsets")
            }
            guard let size = SafeTensorsFile.elementSize[dtype] else {
                throw SafeTensorsError.unsupportedDType(name: name, file: path, dtype: dtype)
            }
            guard let elements = CheckedSize.product(shape), CheckedSize.product(elements, size) != nil else {
                throw SafeTensorsError.badHeader(
                    file: path, reason: "tensor '\(name)' has shape \(shape), more elements than any file holds")
            }
            guard shape.allSatisfy({ $0 >= 0 }), offsets[0] >= 0, offsets[0] <= offsets[1] else {
                throw SafeTensorsError.badHeader(
                    file: path, reason: "tensor '\(name)' has a negative dimension or reversed offsets")
            }
            let info = SafeTensorInfo(dtype: dtype, shape: shape, start: offsets[0], end: offsets[1])
            guard info.end - info.start == info.count * size else {
                throw SafeTensorsError.badHeader(
                    file: path,
                    reason:
                        "tensor '\(name)' spans \(info.end - info.start) bytes but \(dtype) \(shape) needs \(info.count * size)"
                )
            }
            guard info.end <= dataSize else {
                throw SafeTensorsError.truncated(
                    file: path, reason: "tensor '\(name)' ends at byte \(info.end) of a \(dataSize)-byte data section")
            }
            tensors[name] = info
        }
        // The offsets must tile the data section: no overlap, no hole (what the safetensors library enforces).
        var position = 0
        for (name, info) in tensors.sorted(by: { ($0.value.start, $0.value.end) < ($1.value.start, $1.value.end) }) {
            guard info.start == position else {
                throw SafeTensorsError.badHeader(
                    file: path,
                    reason:
                        "tensor '\(name)' starts at \(info.start), expected \(position): offsets overlap or leave a gap"
                )
            }
            position = info.end
        }
        guard position == dataSize else {
            throw SafeTensorsError.badHeader(
                file: path, reason: "tensors cover \(position) bytes of a \(dataSize)-byte data section")
        }
        return (tensors, metadata)
    }

    /// Exactly `count` bytes at `offset`: a file that ends first (changed since it was opened) is truncated.
    private static func read(
        _ file: FileReader, into destination: UnsafeMutableRawPointer, count: Int, at offset: Int
    )
        throws
    {
        let whole: Bool
        do { whole = try file.read(into: destination, count: count, at: offset) } catch let error as FileError {
            throw SafeTensorsError.unreadable(file: file.path, reason: error.message)
        }
        guard whole else {
            throw SafeTensorsError.truncated(file: file.path, reason: "ends before byte \(offset + count)")
        }
    }

    private static func read(_ file: FileReader, count: Int, at offset: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try read(file, into: $0.baseAddress!, count: count, at: offset) }
        return bytes
    }

    public func info(_ name: String) throws -> SafeTensorInfo {
        guard let info = tensors[name] else { throw SafeTensorsError.missingTensor(name: name, file: path) }
        return info
    }

    /// Converts tensor `name` to float32 into `destination` (info.count floats), checking its shape.
    public func readFloats(
        _ name: String, expectedShape: [Int]? = nil, into destination: UnsafeMutablePointer<Float>
    ) throws {
        let info = try info(name)
        if let expected = expectedShape, expected != info.shape {
            throw SafeTensorsError.shapeMismatch(name: name, file: path, expected: expected, actual: info.shape)
        }
        try readFloats(name, elements: 0..<info.count, into: destination)
    }

    /// Converts elements `elements` (row-major, flat) of tensor `name` to float32 into `destination`, reading
    /// only their bytes, through a staging buffer of at most `chunkElements` elements.
    public func readFloats(_ name: String, elements: Range<Int>, into destination: UnsafeMutablePointer<Float>) throws {
        let info = try info(name)
        precondition(elements.lowerBound >= 0 && elements.upperBound <= info.count, "\(name): \(elements) out of range")
        guard let size = Self.elementSize[info.dtype], ["F32", "BF16", "F16", "F64"].contains(info.dtype) else {
            throw SafeTensorsError.unsupportedDType(name: name, file: path, dtype: info.dtype)
        }
        let base = dataStart + info.start + size * elements.lowerBound
        guard info.dtype != "F32" else {
            try Self.read(file, into: destination, count: 4 * elements.count, at: base)
            return
        }
        var staging = [UInt8](repeating: 0, count: size * min(elements.count, Self.chunkElements))
        var done = 0
        while done < elements.count {
            let n = min(Self.chunkElements, elements.count - done)
            let out = destination + done
            try staging.withUnsafeMutableBytes { raw in
                try Self.read(file, into: raw.baseAddress!, count: size * n, at: base + size * done)
                switch info.dtype {
                case "BF16": lm_from_bf16(out, raw.baseAddress!.assumingMemoryBound(to: UInt16.self), n)
                case "F16":
                    for i in 0..<n {
                        out[i] = Float(halfBits: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                    }
                default:
                    for i in 0..<n { out[i] = Float(raw.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
                }
            }
            done += n
        }
    }

    public func floats(_ name: String, expectedShape: [Int]? = nil) throws -> [Float] {
        let n = try info(name).count
        var result = [Float](repeating: 0, count: n)
        try result.withUnsafeMutableBufferPointer {
            try readFloats(name, expectedShape: expectedShape, into: $0.baseAddress!)
        }
        return result
    }

    /// Integer tensors (token ids, targets), from I32 or I64.
    public func int32s(_ name: String) throws -> [Int32] {
        let info = try info(name)
        guard info.dtype == "I32" || info.dtype == "I64" else {
            throw SafeTensorsError.unsupportedDType(name: name, file: path, dtype: info.dtype)
        }
        let bytes = try Self.read(file, count: info.end - info.start, at: dataStart + info.start)
        return bytes.withUnsafeBytes { raw in
            info.dtype == "I32"
                ? (0..<info.count).map { raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self) }
                : (0..<info.count).map {
                    Int32(truncatingIfNeeded: raw.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self))
                }
        }
    }
}

extension Float {
    /// IEEE 754 binary16 to binary32, subnormals and infinities included (no Float16 on every platform).
    init(halfBits h: UInt16) {
        let sign = UInt32(h & 0x8000) << 16
        let exponent = Int(h >> 10) & 0x1f
        let mantissa = UInt32(h & 0x3ff)
        if exponent == 0 {
            let magnitude = Float(mantissa) * 0x1p-24
            self = sign != 0 ? -magnitude : magnitude
        } else if exponent == 31 {
            self = Float(bitPattern: sign | 0x7f80_0000 | (mantissa << 13))
        } else {
            self = Float(bitPattern: sign | UInt32(exponent + 112) << 23 | (mantissa << 13))
        }
    }
}

public struct SafeTensorsEntry {
    public let name: String
    public let shape: [Int]
    public let values: UnsafeBufferPointer<Float>

    public init(name: String, shape: [Int], values: UnsafeBufferPointer<Float>) {
        precondition(shape.reduce(1, *) == values.count, "tensor \(name): shape \(shape) vs \(values.count) values")
        self.name = name
        self.shape = shape
        self.values = values
    }
}

/// The floating-point formats we write: F32 as trained, BF16 as published checkpoints are, F16.
public enum SafeTensorsDType: String, CaseIterable, Sendable {
    case f32 = "F32", bf16 = "BF16", f16 = "F16"

    public var bytes: Int { self == .f32 ? 4 : 2 }
    /// From the command line's words: fp32, bf16, fp16.
    public init(option: String) { self = ["bf16": .bf16, "fp16": .f16][option] ?? .f32 }
    /// A shard size as Hugging Face's `max_shard_size` writes it ("5GB", "900MB", "1.5GiB", "20kB", or bytes):
    /// KB, MB, GB, TB in powers of 1000, KiB… in powers of 1024; nil for anything else or a size below 1 byte.
    public static func shardBytes(_ text: String) -> Int? {
        let units: [(String, Double)] = [
            ("kib", 0x1p10), ("mib", 0x1p20), ("gib", 0x1p30), ("tib", 0x1p40), ("kb", 1e3), ("mb", 1e6), ("gb", 1e9),
            ("tb", 1e12), ("b", 1),
        ]
        let lower = text.lowercased().trimmingCharacters(in: .whitespaces)
        let (number, scale) =
            units.first { lower.hasSuffix($0.0) }.map { (String(lower.dropLast($0.0.count)), $0.1) } ?? (lower, 1)
        guard let value = Double(number.trimmingCharacters(in: .whitespaces)), value.isFinite, value * scale >= 1
        else { return nil }
        return value * scale >= Double(Int.max) ? Int.max : Int(value * scale)
    }
    /// config.json's `torch_dtype`.
    public var torchName: String { ["F32": "float32", "BF16": "bfloat16", "F16": "float16"][rawValue]! }
}

public enum SafeTensorsWriter {
    /// Writes tensors atomically, in the given order, as `dtype` (BF16 rounds to nearest even; F16 saturates
    /// to ±inf beyond 65504), header padded to 8 bytes as the reference writer does.
    public static func write(
        _ entries: [SafeTensorsEntry], dtype: SafeTensorsDType = .f32, metadata: [String: String] = ["format": "pt"],
        to path: String
    ) throws {
        let headerBytes = header(entries.map { ($0.name, $0.shape) }, dtype: dtype, metadata: metadata)
        try AtomicFile.write(to: path) { writer in
            try headerBytes.withUnsafeBytes { try writer.write($0) }
            guard dtype != .f32 else {
                for entry in entries { try writer.write(UnsafeRawBufferPointer(entry.values)) }
                return
            }
            var staging = [UInt16](repeating: 0, count: 1 << 20)
            for entry in entries {
                try convert(entry.values, to: dtype, through: &staging) { try writer.write($0) }
            }
        }
    }

    /// A file's first bytes for tensors laid out in the given order: the 8-byte length, then the JSON header
    /// padded with spaces to a multiple of 8, as the reference writer does. Tensor data follows at once.
    public static func header(
        _ tensors: [(name: String, shape: [Int])], dtype: SafeTensorsDType,
        metadata: [String: String] = ["format": "pt"]
    ) -> [UInt8] {
        var header = "{"
        if !metadata.isEmpty {
            let pairs = metadata.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)):\(jsonString($0.value))" }
            header += "\"__metadata__\":{\(pairs.joined(separator: ","))}"
        }
        var offset = 0
        for (name, shape) in tensors {
            if header.count > 1 { header += "," }
            let end = offset + dtype.bytes * shape.reduce(1, *)
            header +=
                "\(jsonString(name)):{\"dtype\":\"\(dtype.rawValue)\",\"shape\":\(shape),\"data_offsets\":[\(offset),\(end)]}"
            offset = end
        }
        header += "}"
        var headerBytes = Array(header.utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }
        return withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { Array($0) } + headerBytes
    }

    /// Hands `values` as `dtype` bytes to `emit`, a chunk of `staging` at a time (BF16 rounds to nearest even;
    /// F16 saturates to ±inf beyond 65504; F32 is passed through without copying).
    public static func convert(
        _ values: UnsafeBufferPointer<Float>, to dtype: SafeTensorsDType, through staging: inout [UInt16],
        _ emit: (UnsafeRawBufferPointer) throws -> Void
    ) rethrows {
        guard dtype != .f32 else { return try emit(UnsafeRawBufferPointer(values)) }
        var done = 0
        while done < values.count {
            let n = min(staging.count, values.count - done)
            let source = values.baseAddress! + done
            staging.withUnsafeMutableBufferPointer { out in
                if dtype == .bf16 {
                    lm_to_bf16(out.baseAddress!, source, n)
                } else {
                    for i in 0..<n { out[i] = Float16(source[i]).bitPattern }
                }
            }
            try staging.withUnsafeBytes { try emit(UnsafeRawBufferPointer(rebasing: $0[0..<(2 * n)])) }
            done += n
        }
    }

    static func jsonString(_ s: String) -> String {
        let data = try! JSONSerialization.data(withJSONObject: [s], options: [.withoutEscapingSlashes])
        let array = String(decoding: data, as: UTF8.self)
        return String(array.dropFirst().dropLast())
    }
}
