// One column chunk read page by page: each page's header (Thrift), its CRC where the writer stored one, its
// decompression (snappy, gzip, zstd), its repetition and definition levels (RLE / bit-packed hybrid) and its
// values (PLAIN, or indices into the chunk's dictionary page). A chunk may switch from dictionary to PLAIN
// pages part-way, as pyarrow's writer does when a dictionary outgrows its limit. Memory is the current page
// and the dictionary; every error names the file, row group, column and page.
import CSnappy
import CZlib
import CZstd
import Foundation
import Support

/// A value of a page: the bytes of a BYTE_ARRAY (a slice of the page or dictionary, not a copy), or a number.
enum ParquetValue {
    case bytes(ArraySlice<UInt8>)
    case int(Int64)
    case double(Double)
    case bool(Bool)
}

/// One entry of a column: its levels, and its value when the definition level is the maximum.
struct ColumnEntry {
    var repetition: Int
    var definition: Int
    var value: ParquetValue?
}

final class ColumnCursor {
    let file: ParquetFile
    let group: Int
    let leaf: SchemaNode
    private let chunk: ColumnChunkMetadata
    private let type: ParquetPhysicalType
    private var position: Int
    private let end: Int
    /// 1-based, counting the dictionary page, and where it starts in the file.
    private(set) var page = 0
    private var pageOffset = 0
    private var entriesLeftInChunk: Int64
    private var dictionary: PageValues?
    // The current data page, decoded.
    private var repetitions: [UInt16] = []
    private var definitions: [UInt16] = []
    private var values = PageValues.empty
    private var entry = 0
    private var entryCount = 0
    private var valueIndex = 0

    init(file: ParquetFile, group: Int, leaf: SchemaNode) throws {
        self.file = file
        self.group = group
        self.leaf = leaf
        chunk = file.metadata.rowGroups[group].columns[leaf.leafIndex!]
        guard let type = chunk.type ?? leaf.element.type else {
            throw DatasetError.invalid("\(file.path): column '\(leaf.dottedPath)' has no physical type")
        }
        self.type = type
        position = Int(chunk.start)
        end = Int(chunk.start + chunk.compressedSize)
        entriesLeftInChunk = chunk.valueCount
    }

    var place: String {
        "\(file.path): row group \(group + 1), column '\(leaf.dottedPath)', page \(page) (at byte \(pageOffset))"
    }

    private func fail(_ reason: String) -> DatasetError { .invalid("\(place): \(reason)") }

    /// The next entry, or nil at the end of the chunk.
    func next() throws -> ColumnEntry? {
        while entry == entryCount {
            guard try loadPage() else { return nil }
        }
        let definition = leaf.maxDefinition > 0 ? Int(definitions[entry]) : 0
        let repetition = leaf.maxRepetition > 0 ? Int(repetitions[entry]) : 0
        entry += 1
        guard definition == leaf.maxDefinition else {
            return ColumnEntry(repetition: repetition, definition: definition)
        }
        defer { valueIndex += 1 }
        return ColumnEntry(repetition: repetition, definition: definition, value: values[valueIndex])
    }

    /// The repetition level of the entry `next` would return (0 starts a row), or nil at the chunk's end.
    func peekRepetition() throws -> Int? {
        while entry == entryCount {
            guard try loadPage() else { return nil }
        }
        return leaf.maxRepetition > 0 ? Int(repetitions[entry]) : 0
    }

    // MARK: - Pages

    /// Reads pages up to and including the next data page; false at the chunk's end.
    private func loadPage() throws -> Bool {
        while position < end {
            guard entriesLeftInChunk > 0 else { return false }
            page += 1
            pageOffset = position
            let (header, headerLength) = try readHeader()
            let start = position + headerLength
            let isData = header.kind == PageHeader.Kind.data.rawValue || header.kind == PageHeader.Kind.dataV2.rawValue
            guard !isData || Int64(header.valueCount) <= entriesLeftInChunk else {
                throw fail(
                    "the page holds \(header.valueCount) entries, more than the \(entriesLeftInChunk) the footer leaves the chunk; the file is damaged"
                )
            }
            // Levels are held decoded, 4 bytes an entry, so one page's count is bounded (writers cut pages at
            // 20,000 rows or 1 MB; a count beyond this is damage or a file no reader of bounded memory takes).
            guard header.valueCount <= 1 << 26 else {
                throw fail(
                    "the page header counts \(header.valueCount) entries, more than the 2^26 one page may hold here")
            }
            guard header.compressedSize <= end - start else {
                throw fail(
                    "the page (\(header.compressedSize) bytes) runs past its column chunk; the file is truncated or damaged"
                )
            }
            guard let raw = try file.file.bytes(count: header.compressedSize, at: start) else {
                throw fail("the file ends inside this page; it is truncated, re-download it")
            }
            position = start + header.compressedSize
            if let crc = header.crc {
                let actual = raw.withUnsafeBufferPointer { UInt32(crc32(0, $0.baseAddress, UInt32($0.count))) }
                guard actual == crc else {
                    throw fail(
                        String(
                            format:
                                "CRC mismatch (stored %08x, computed %08x): the page is corrupt; re-download the file",
                            crc, actual))
                }
            }
            switch PageHeader.Kind(rawValue: header.kind) {
            case .dictionary:
                guard
                    header.encoding == ParquetEncoding.plain.rawValue
                        || header.encoding == ParquetEncoding.plainDictionary.rawValue
                else {
                    throw fail(
                        "a dictionary page in \(ParquetEncoding.name(header.encoding)), which is not Parquet's PLAIN")
                }
                let bytes = try decompress(raw[...], to: header.uncompressedSize)
                var at = 0
                dictionary = try plainValues(bytes, at: &at, count: header.valueCount)
            case .data:
                try decodeV1(header, raw)
                return true
            case .dataV2:
                try decodeV2(header, raw)
                return true
            case .index, .none:
                continue  // index pages (and kinds from later versions) carry nothing to read
            }
        }
        guard entriesLeftInChunk <= 0 else {
            throw fail(
                "the column chunk ends \(entriesLeftInChunk) entries short of what the footer says; the file is damaged"
            )
        }
        return false
    }

    /// The header at `position`, read through a window that grows until the header fits in it.
    private func readHeader() throws -> (PageHeader, Int) {
        var window = min(256, end - position)
        while true {
            guard let bytes = try file.file.bytes(count: window, at: position) else {
                throw fail("the file ends inside a page header; it is truncated, re-download it")
            }
            do {
                return try bytes.withUnsafeBytes { b in
                    var reader = ThriftReader(b)
                    let header = try PageHeader(&reader)
                    return (header, reader.position)
                }
            } catch ThriftError.truncated where window < end - position {
                window = min(window * 4, end - position)
            } catch let error as ThriftError {
                throw fail("corrupt page header (\(error)); the file is damaged, re-download or rewrite it")
            }
        }
    }

    private func decodeV1(_ header: PageHeader, _ raw: [UInt8]) throws {
        let bytes = try decompress(raw[...], to: header.uncompressedSize)
        var at = 0
        let count = header.valueCount
        if leaf.maxRepetition > 0 {
            guard header.repetitionLevelEncoding == ParquetEncoding.rle.rawValue else {
                throw unsupported(header.repetitionLevelEncoding, what: "repetition levels")
            }
            repetitions = try prefixedLevels(bytes, at: &at, max: leaf.maxRepetition, count: count, what: "repetition")
        }
        if leaf.maxDefinition > 0 {
            guard header.definitionLevelEncoding == ParquetEncoding.rle.rawValue else {
                throw unsupported(header.definitionLevelEncoding, what: "definition levels")
            }
            definitions = try prefixedLevels(bytes, at: &at, max: leaf.maxDefinition, count: count, what: "definition")
        }
        try decodeValues(header, bytes, from: at)
    }

    private func decodeV2(_ header: PageHeader, _ raw: [UInt8]) throws {
        let levels = header.repetitionLevelsLength + header.definitionLevelsLength
        guard levels <= raw.count else { throw fail("its levels are longer than the page") }
        let count = header.valueCount
        if leaf.maxRepetition > 0 {
            repetitions = try hybrid(
                raw[0..<header.repetitionLevelsLength], width: bitWidth(leaf.maxRepetition), count: count,
                what: "repetition levels"
            ).map { UInt16(truncatingIfNeeded: $0) }
        }
        if leaf.maxDefinition > 0 {
            definitions = try hybrid(
                raw[header.repetitionLevelsLength..<levels], width: bitWidth(leaf.maxDefinition), count: count,
                what: "definition levels"
            ).map { UInt16(truncatingIfNeeded: $0) }
        }
        guard header.uncompressedSize >= levels else {
            throw fail("the page's levels (\(levels) bytes) are longer than the page (\(header.uncompressedSize))")
        }
        if header.valuesCompressed, header.uncompressedSize > levels {
            try decodeValues(header, try decompress(raw[levels...], to: header.uncompressedSize - levels), from: 0)
        } else if header.valuesCompressed {
            try decodeValues(header, [], from: 0)  // no values (all null): some writers store no codec frame
        } else {
            try decodeValues(header, raw, from: levels)
        }
    }

    private func decodeValues(_ header: PageHeader, _ bytes: [UInt8], from start: Int) throws {
        let count = header.valueCount
        for (levels, maxLevel) in [(repetitions, leaf.maxRepetition), (definitions, leaf.maxDefinition)]
        where maxLevel > 0 {
            guard !levels.contains(where: { Int($0) > maxLevel }) else {
                throw fail("a level above the column's maximum \(maxLevel)")
            }
        }
        let present =
            leaf.maxDefinition > 0 ? definitions.reduce(0) { $0 + (Int($1) == leaf.maxDefinition ? 1 : 0) } : count
        var at = start
        switch header.encoding {
        case ParquetEncoding.plain.rawValue:
            values = try plainValues(bytes, at: &at, count: present)
        case ParquetEncoding.rleDictionary.rawValue, ParquetEncoding.plainDictionary.rawValue:
            guard let dictionary else { throw fail("dictionary-encoded values, but the chunk has no dictionary page") }
            guard present > 0 else {
                values = .empty
                break
            }
            guard start < bytes.count, bytes[start] <= 32 else { throw fail("a bad dictionary index width") }
            let indices = try hybrid(
                bytes[(start + 1)...], width: Int(bytes[start]), count: present, what: "dictionary indices")
            if let bad = indices.first(where: { Int($0) >= dictionary.count }) {
                throw fail("dictionary index \(bad) past the dictionary's \(dictionary.count) values")
            }
            values = dictionary.select(indices)
        case ParquetEncoding.rle.rawValue where type == .boolean:
            guard bytes.count - start >= 4 else { throw fail("RLE booleans without their length") }
            let length = Int(bytes.littleEndianUInt32(at: start))
            guard length <= bytes.count - start - 4 else { throw fail("RLE booleans longer than the page") }
            values = .bools(
                try hybrid(bytes[(start + 4)..<(start + 4 + length)], width: 1, count: present, what: "booleans")
                    .map { $0 != 0 })
        default:
            throw unsupported(header.encoding, what: "values")
        }
        entry = 0
        entryCount = count
        valueIndex = 0
        entriesLeftInChunk -= Int64(count)
    }

    private func unsupported(_ encoding: Int32, what: String) -> DatasetError {
        fail(
            "\(what) in \(ParquetEncoding.name(encoding)), an encoding this reader does not decode; rewrite the file with PLAIN or dictionary encoding (pyarrow's defaults)"
        )
    }

    // MARK: - Codecs

    private func decompress(_ data: ArraySlice<UInt8>, to size: Int) throws -> [UInt8] {
        guard let codec = ParquetCodec(rawValue: chunk.codec) else { throw fail("unknown codec \(chunk.codec)") }
        if codec == .uncompressed {
            guard data.count == size else {
                throw fail("an uncompressed page of \(data.count) bytes, its header says \(size)")
            }
            return Array(data)
        }
        var out = [UInt8](repeating: 0, count: size)
        let produced: Int = try data.withUnsafeBytes { input in
            try out.withUnsafeMutableBytes { output in
                switch codec {
                case .snappy:
                    var length = 0
                    let source = input.baseAddress?.assumingMemoryBound(to: CChar.self)
                    guard snappy_uncompressed_length(source, input.count, &length) == SNAPPY_OK, length == size,
                        snappy_uncompress(
                            source, input.count, output.baseAddress?.assumingMemoryBound(to: CChar.self), &length)
                            == SNAPPY_OK
                    else { throw fail("corrupt snappy data; the page is damaged, re-download the file") }
                    return length
                case .zstd:
                    let n = ZSTD_decompress(output.baseAddress, size, input.baseAddress, input.count)
                    guard ZSTD_isError(n) == 0 else {
                        throw fail("corrupt zstd data (\(String(cString: ZSTD_getErrorName(n)))); re-download the file")
                    }
                    return n
                case .gzip:
                    return try inflateGzip(input, into: output)
                default:
                    throw fail(
                        "compressed with \(codec.name), which this reader does not decode (it reads UNCOMPRESSED, SNAPPY, GZIP and ZSTD); rewrite the file, e.g. pyarrow.parquet.write_table(table, path, compression='zstd')"
                    )
                }
            }
        }
        guard produced == size else {
            throw fail("the page decompresses to \(produced) bytes, its header says \(size)")
        }
        return out
    }

    private func inflateGzip(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int
    {
        var stream = z_stream()
        // 15 + 32: a gzip or zlib wrapper, told by its header.
        guard inflateInit2_(&stream, 15 + 32, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw fail("zlib could not start")
        }
        defer { inflateEnd(&stream) }
        stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: UInt8.self))
        stream.avail_in = UInt32(input.count)
        stream.next_out = output.baseAddress?.assumingMemoryBound(to: UInt8.self)
        stream.avail_out = UInt32(output.count)
        let result = inflate(&stream, Z_FINISH)
        guard result == Z_STREAM_END else {
            let message = stream.msg.map { String(cString: $0) } ?? "error \(result)"
            throw fail("corrupt gzip data (\(message)); re-download the file")
        }
        return output.count - Int(stream.avail_out)
    }

    // MARK: - Encodings

    private func plainValues(_ bytes: [UInt8], at: inout Int, count: Int) throws -> PageValues {
        func need(_ n: Int) throws {
            guard n <= bytes.count - at else { throw fail("PLAIN values end early (\(count) expected)") }
        }
        switch type {
        case .byteArray:
            var ranges: [Range<Int>] = []
            ranges.reserveCapacity(min(count, (bytes.count - at) / 4))
            for _ in 0..<count {
                try need(4)
                let length = Int(bytes.littleEndianUInt32(at: at))
                at += 4
                try need(length)
                ranges.append(at..<(at + length))
                at += length
            }
            return .bytes(bytes, ranges)
        case .int32:
            try need(4 * count)
            defer { at += 4 * count }
            return .ints((0..<count).map { Int64(Int32(bitPattern: bytes.littleEndianUInt32(at: at + 4 * $0))) })
        case .int64:
            try need(8 * count)
            defer { at += 8 * count }
            return .ints((0..<count).map { Int64(bitPattern: bytes.littleEndianUInt64(at: at + 8 * $0)) })
        case .float:
            try need(4 * count)
            defer { at += 4 * count }
            return .doubles((0..<count).map { Double(Float(bitPattern: bytes.littleEndianUInt32(at: at + 4 * $0))) })
        case .double:
            try need(8 * count)
            defer { at += 8 * count }
            return .doubles((0..<count).map { Double(bitPattern: bytes.littleEndianUInt64(at: at + 8 * $0)) })
        case .boolean:
            try need((count + 7) / 8)
            defer { at += (count + 7) / 8 }
            return .bools((0..<count).map { bytes[at + $0 / 8] >> ($0 % 8) & 1 != 0 })
        case .int96, .fixedLenByteArray:
            throw fail("a \(type.name) column, which this reader does not read")
        }
    }

    private func bitWidth(_ maxLevel: Int) -> Int { Int.bitWidth - maxLevel.leadingZeroBitCount }

    /// v1 levels: a 4-byte length, then that many bytes of the hybrid encoding.
    private func prefixedLevels(_ bytes: [UInt8], at: inout Int, max: Int, count: Int, what: String) throws -> [UInt16]
    {
        guard bytes.count - at >= 4 else { throw fail("the page ends before its \(what) levels") }
        let length = Int(bytes.littleEndianUInt32(at: at))
        at += 4
        guard length <= bytes.count - at else { throw fail("\(what) levels longer than the page") }
        defer { at += length }
        return try hybrid(bytes[at..<(at + length)], width: bitWidth(max), count: count, what: "\(what) levels")
            .map { UInt16(truncatingIfNeeded: $0) }
    }

    /// The RLE / bit-packed hybrid: runs of one repeated value, or groups of 8 values packed LSB first.
    private func hybrid(_ bytes: ArraySlice<UInt8>, width: Int, count: Int, what: String) throws -> [UInt32] {
        var out: [UInt32] = []
        out.reserveCapacity(min(count, 1 << 20))
        var at = bytes.startIndex
        let mask: UInt64 = width == 32 ? 0xFFFF_FFFF : (1 << UInt64(width)) - 1
        while out.count < count {
            var header: UInt64 = 0
            var shift: UInt64 = 0
            while true {
                guard at < bytes.endIndex, shift < 64 else { throw fail("\(what) end early") }
                let b = bytes[at]
                at += 1
                header |= UInt64(b & 0x7F) << shift
                if b & 0x80 == 0 { break }
                shift += 7
            }
            if header & 1 == 0 {
                let run = Int(min(header >> 1, UInt64(count - out.count)))
                let byteCount = (width + 7) / 8
                guard bytes.endIndex - at >= byteCount else { throw fail("\(what) end early") }
                guard header >> 1 > 0 else { throw fail("\(what): an empty run") }
                var value: UInt32 = 0
                for i in 0..<byteCount { value |= UInt32(bytes[at + i]) << (8 * UInt32(i)) }
                at += byteCount
                out.append(contentsOf: repeatElement(value, count: run))
            } else {
                // A group of 8 values takes `width` bytes: more groups than the bytes left is damage (and is
                // checked before any product that could overflow).
                let left = UInt64(bytes.endIndex - at)
                guard width == 0 ? header >> 1 <= UInt64(count) : header >> 1 <= left / UInt64(width) else {
                    throw fail("\(what) end early")
                }
                let groups = Int(header >> 1)
                let byteCount = groups * width
                let wanted = min(groups * 8, count - out.count)
                var buffer: UInt64 = 0
                var bits = 0
                var p = at
                for _ in 0..<wanted {
                    while bits < width {
                        buffer |= UInt64(bytes[p]) << UInt64(bits)
                        p += 1
                        bits += 8
                    }
                    out.append(UInt32(buffer & mask))
                    buffer >>= UInt64(width)
                    bits -= width
                }
                at += byteCount
            }
        }
        return out
    }
}

/// A page's (or dictionary's) values, held as decoded: byte arrays as ranges of one buffer.
enum PageValues {
    case bytes([UInt8], [Range<Int>])
    case ints([Int64])
    case doubles([Double])
    case bools([Bool])

    static let empty = PageValues.bools([])

    var count: Int {
        switch self {
        case let .bytes(_, ranges): ranges.count
        case let .ints(v): v.count
        case let .doubles(v): v.count
        case let .bools(v): v.count
        }
    }

    subscript(i: Int) -> ParquetValue {
        switch self {
        case let .bytes(buffer, ranges): .bytes(buffer[ranges[i]])
        case let .ints(v): .int(v[i])
        case let .doubles(v): .double(v[i])
        case let .bools(v): .bool(v[i])
        }
    }

    func select(_ indices: [UInt32]) -> PageValues {
        switch self {
        case let .bytes(buffer, ranges): .bytes(buffer, indices.map { ranges[Int($0)] })
        case let .ints(v): .ints(indices.map { v[Int($0)] })
        case let .doubles(v): .doubles(indices.map { v[Int($0)] })
        case let .bools(v): .bools(indices.map { v[Int($0)] })
        }
    }
}

extension [UInt8] {
    func littleEndianUInt32(at i: Int) -> UInt32 {
        UInt32(self[i]) | UInt32(self[i + 1]) << 8 | UInt32(self[i + 2]) << 16 | UInt32(self[i + 3]) << 24
    }

    func littleEndianUInt64(at i: Int) -> UInt64 {
        UInt64(littleEndianUInt32(at: i)) | UInt64(littleEndianUInt32(at: i + 4)) << 32
    }
}
