// Parquet's file metadata and page headers (parquet.thrift), the fields a reader of text corpora needs: the
// schema, the row groups and their column chunks, and each page's kind, sizes, CRC and encodings. Field ids
// are the spec's; everything else is skipped.

enum ParquetPhysicalType: Int32 {
    case boolean = 0, int32, int64, int96, float, double, byteArray, fixedLenByteArray

    var name: String {
        ["BOOLEAN", "INT32", "INT64", "INT96", "FLOAT", "DOUBLE", "BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY"][
            Int(rawValue)]
    }
}

enum ParquetRepetition: Int32 {
    case required = 0, optional, repeated
}

enum ParquetCodec: Int32 {
    case uncompressed = 0, snappy, gzip, lzo, brotli, lz4, zstd, lz4Raw

    var name: String { ["UNCOMPRESSED", "SNAPPY", "GZIP", "LZO", "BROTLI", "LZ4", "ZSTD", "LZ4_RAW"][Int(rawValue)] }
}

enum ParquetEncoding: Int32 {
    case plain = 0, groupVarInt, plainDictionary, rle, bitPacked, deltaBinaryPacked, deltaLengthByteArray
    case deltaByteArray, rleDictionary, byteStreamSplit

    static func name(_ code: Int32) -> String {
        let names = [
            "PLAIN", "GROUP_VAR_INT", "PLAIN_DICTIONARY", "RLE", "BIT_PACKED", "DELTA_BINARY_PACKED",
            "DELTA_LENGTH_BYTE_ARRAY", "DELTA_BYTE_ARRAY", "RLE_DICTIONARY", "BYTE_STREAM_SPLIT",
        ]
        return names.indices.contains(Int(code)) ? names[Int(code)] : "encoding \(code)"
    }
}

/// One node of the schema, as the footer lists them: depth first, a group followed by its children.
struct SchemaElement {
    var name = ""
    var type: ParquetPhysicalType?
    var repetition: ParquetRepetition = .required
    var childCount = 0
    /// The legacy ConvertedType: 0 UTF8, 1 MAP, 2 MAP_KEY_VALUE, 3 LIST, 4 ENUM, 19 JSON.
    var convertedType: Int32?
    /// The LogicalType union's member: 1 STRING, 2 MAP, 3 LIST, 4 ENUM, 12 JSON, and so on.
    var logicalType: Int16?

    var isList: Bool { convertedType == 3 || logicalType == 3 }
    var isMap: Bool { convertedType == 1 || convertedType == 2 || logicalType == 2 }

    init(_ r: inout ThriftReader) throws {
        try r.structure { r, id, kind in
            switch id {
            case 1: type = ParquetPhysicalType(rawValue: try r.int32())
            case 3: repetition = ParquetRepetition(rawValue: try r.int32()) ?? .required
            case 4: name = try r.string()
            case 5: childCount = Int(try r.int32())
            case 6: convertedType = try r.int32()
            case 10:
                guard kind == .structure else { return false }
                try r.structure { r, member, memberKind in
                    logicalType = member
                    try r.skip(memberKind)
                    return true
                }
            default: return false
            }
            return true
        }
    }
}

struct ColumnChunkMetadata {
    var type: ParquetPhysicalType?
    var path: [String] = []
    var codec: Int32 = 0
    var valueCount: Int64 = 0
    var compressedSize: Int64 = 0
    var dataPageOffset: Int64 = 0
    var dictionaryPageOffset: Int64?
    /// Set when the chunk lives in another file, which this reader does not follow.
    var filePath: String?

    /// The chunk's first byte: its dictionary page where it has one, else its first data page.
    var start: Int64 {
        if let d = dictionaryPageOffset, d > 0, d < dataPageOffset { return d }
        return dataPageOffset
    }

    init(_ r: inout ThriftReader) throws {
        try r.structure { r, id, kind in
            switch id {
            case 1: filePath = try r.string()
            case 3:
                try r.structure { r, id, _ in
                    switch id {
                    case 1: type = ParquetPhysicalType(rawValue: try r.int32())
                    case 3: path = try r.list { try $0.string() }
                    case 4: codec = try r.int32()
                    case 5: valueCount = try r.int()
                    case 7: compressedSize = try r.int()
                    case 9: dataPageOffset = try r.int()
                    case 11: dictionaryPageOffset = try r.int()
                    default: return false
                    }
                    return true
                }
            default: return false
            }
            return true
        }
    }
}

struct RowGroupMetadata {
    var columns: [ColumnChunkMetadata] = []
    var rowCount: Int64 = 0

    init(_ r: inout ThriftReader) throws {
        try r.structure { r, id, _ in
            switch id {
            case 1: columns = try r.list { try ColumnChunkMetadata(&$0) }
            case 3: rowCount = try r.int()
            default: return false
            }
            return true
        }
    }
}

struct FileMetadata {
    var schema: [SchemaElement] = []
    var rowCount: Int64 = 0
    var rowGroups: [RowGroupMetadata] = []
    var createdBy: String?
    var encrypted = false

    init(_ r: inout ThriftReader) throws {
        try r.structure { r, id, kind in
            switch id {
            case 2: schema = try r.list { try SchemaElement(&$0) }
            case 3: rowCount = try r.int()
            case 4: rowGroups = try r.list { try RowGroupMetadata(&$0) }
            case 6: createdBy = try r.string()
            case 8:
                try r.skip(kind)
                encrypted = true
            default: return false
            }
            return true
        }
    }
}

struct PageHeader {
    enum Kind: Int32 {
        case data = 0, index, dictionary, dataV2
    }

    var kind: Int32 = -1
    var uncompressedSize = 0
    var compressedSize = 0
    var crc: UInt32?
    /// Entries (values and nulls) in a data page, values in a dictionary page.
    var valueCount = 0
    var encoding: Int32 = 0
    var definitionLevelEncoding: Int32 = ParquetEncoding.rle.rawValue
    var repetitionLevelEncoding: Int32 = ParquetEncoding.rle.rawValue
    /// Data page v2: the levels' lengths (stored uncompressed before the values) and whether the values are
    /// compressed.
    var definitionLevelsLength = 0
    var repetitionLevelsLength = 0
    var valuesCompressed = true

    init(_ r: inout ThriftReader) throws {
        try r.structure { r, id, _ in
            switch id {
            case 1: kind = try r.int32()
            case 2: uncompressedSize = Int(try r.int32())
            case 3: compressedSize = Int(try r.int32())
            case 4: crc = UInt32(bitPattern: try r.int32())
            case 5:  // DataPageHeader
                try r.structure { r, id, _ in
                    switch id {
                    case 1: valueCount = Int(try r.int32())
                    case 2: encoding = try r.int32()
                    case 3: definitionLevelEncoding = try r.int32()
                    case 4: repetitionLevelEncoding = try r.int32()
                    default: return false
                    }
                    return true
                }
            case 7:  // DictionaryPageHeader
                try r.structure { r, id, _ in
                    switch id {
                    case 1: valueCount = Int(try r.int32())
                    case 2: encoding = try r.int32()
                    default: return false
                    }
                    return true
                }
            case 8:  // DataPageHeaderV2
                try r.structure { r, id, kind in
                    switch id {
                    case 1: valueCount = Int(try r.int32())
                    case 4: encoding = try r.int32()
                    case 5: definitionLevelsLength = Int(try r.int32())
                    case 6: repetitionLevelsLength = Int(try r.int32())
                    case 7: valuesCompressed = ThriftReader.bool(kind)
                    default: return false
                    }
                    return true
                }
            default: return false
            }
            return true
        }
        guard uncompressedSize >= 0, compressedSize >= 0, valueCount >= 0, definitionLevelsLength >= 0,
            repetitionLevelsLength >= 0
        else { throw ThriftError.malformed("a negative size in a page header") }
    }
}
