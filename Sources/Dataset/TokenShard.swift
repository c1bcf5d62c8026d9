// Token shards: the binary files data preparation writes and the loader maps.
//
// A shard is a 64-byte little-endian header, then the tokens:
//   0  magic "LLTOKSHD"        8  version (u32) = 1      12 token width in bytes (u32): 2 or 4
//   16 token count (u64)       24 document count (u64)   32 first 32 bytes... of the tokenizer's SHA-256
// The tokenizer hash travels in every shard and in index.json, so a model can never read tokens made by
// another tokenizer without being told.
import Foundation
import Support

public enum DatasetError: Error, CustomStringConvertible, Equatable {
    case unreadable(file: String, reason: String)
    case emptyInput(file: String)
    case badShard(file: String, reason: String)
    case tokenizerMismatch(file: String, expected: String, actual: String)
    case invalid(String)

    public var description: String {
        switch self {
        case let .unreadable(file, reason): "\(file): cannot read: \(reason)"
        case let .emptyInput(file): "\(file): no document in this input (empty file, or only delimiter lines)"
        case let .badShard(file, reason): "\(file): not a valid token shard: \(reason)"
        case let .tokenizerMismatch(file, expected, actual):
            "\(file) was tokenized with tokenizer sha256 \(actual), but this run uses \(expected); re-run `llama-train prepare` with this tokenizer"
        case let .invalid(message): message
        }
    }
}

public struct TokenShard {
    static let magic = Array("LLTOKSHD".utf8)
    static let headerSize = 64

    public let path: String
    public let tokenCount: Int
    public let documentCount: Int
    public let tokenizerHash: String
    let width: Int
    private let data: Data

    /// The token width for a vocabulary: 16-bit when every id fits.
    public static func width(vocabSize: Int) -> Int { vocabSize <= 65536 ? 2 : 4 }

    /// The 64-byte header of a shard of `count` tokens.
    public static func header(count: Int, documents: Int, width: Int, tokenizerHash: String) -> [UInt8] {
        var header = [UInt8](repeating: 0, count: headerSize)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value.littleEndian) { for (i, b) in $0.enumerated() { header[offset + i] = b } }
        }
        header.replaceSubrange(0..<8, with: magic)
        put(UInt32(1), at: 8)
        put(UInt32(width), at: 12)
        put(UInt64(count), at: 16)
        put(UInt64(documents), at: 24)
        let hashBytes = stride(from: 0, to: 64, by: 2).map { UInt8(tokenizerHash.dropFirst($0).prefix(2), radix: 16)! }
        header.replaceSubrange(32..<64, with: hashBytes)
        return header
    }

    /// Writes `tokens` atomically in one go.
    public static func write(
        tokens: [Int32], documents: Int, vocabSize: Int, tokenizerHash: String, to path: String
    ) throws {
        let writer = try TokenShardWriter(path: path, vocabSize: vocabSize, tokenizerHash: tokenizerHash)
        try writer.append(tokens)
        _ = try writer.commit(documents: documents)
    }

    public init(path: String) throws {
        self.path = path
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        } catch {
            throw DatasetError.unreadable(file: path, reason: plainText(error))
        }
        guard data.count >= TokenShard.headerSize, Array(data.prefix(8)) == TokenShard.magic else {
            throw DatasetError.badShard(file: path, reason: "no LLTOKSHD header")
        }
        let (version, width, count, documents) = data.withUnsafeBytes { raw in
            (
                UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt32.self)),
                Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 12, as: UInt32.self))),
                Int(truncatingIfNeeded: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self))),
                Int(truncatingIfNeeded: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self)))
            )
        }
        guard version == 1 else {
            throw DatasetError.badShard(file: path, reason: "version \(version), this build reads 1")
        }
        guard width == 2 || width == 4 else { throw DatasetError.badShard(file: path, reason: "token width \(width)") }
        guard count >= 0, documents >= 0, let bytes = CheckedSize.product(count, width),
            data.count == TokenShard.headerSize + bytes
        else {
            throw DatasetError.badShard(
                file: path,
                reason:
                    "header promises \(count) tokens of \(width) bytes, file has \(data.count - TokenShard.headerSize) bytes after the header"
            )
        }
        self.width = width
        tokenCount = count
        documentCount = documents
        tokenizerHash = data[32..<64].map { String(format: "%02x", $0) }.joined()
    }

    /// Copies tokens [start, start + count) into `out`.
    public func read(start: Int, count: Int, into out: UnsafeMutablePointer<Int32>) {
        precondition(start >= 0 && start + count <= tokenCount, "read \(start)+\(count) of \(tokenCount) in \(path)")
        data.withUnsafeBytes { raw in
            let base = raw.baseAddress! + TokenShard.headerSize
            if width == 2 {
                for i in 0..<count {
                    out[i] = Int32(
                        UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2 * (start + i), as: UInt16.self)))
                }
            } else {
                for i in 0..<count {
                    out[i] = Int32(littleEndian: base.loadUnaligned(fromByteOffset: 4 * (start + i), as: Int32.self))
                }
            }
        }
    }

    /// The largest token id in the shard: a full scan, for shards whose index does not record it.
    public func maxTokenId() -> Int32 {
        var best: Int32 = -1
        let chunk = 1 << 16
        var buffer = [Int32](repeating: 0, count: chunk)
        var start = 0
        while start < tokenCount {
            let n = min(chunk, tokenCount - start)
            buffer.withUnsafeMutableBufferPointer { read(start: start, count: n, into: $0.baseAddress!) }
            best = max(best, buffer[0..<n].max() ?? -1)
            start += n
        }
        return best
    }

    public func tokens() -> [Int32] {
        var out = [Int32](repeating: 0, count: tokenCount)
        out.withUnsafeMutableBufferPointer {
            if tokenCount > 0 { read(start: 0, count: tokenCount, into: $0.baseAddress!) }
        }
        return out
    }
}

/// One shard written as its tokens arrive: the header's counts are filled in at `commit`, which makes the
/// file appear whole (AtomicFile.Pending); dropped uncommitted, it leaves nothing.
public final class TokenShardWriter {
    public let path: String
    let width: Int
    let tokenizerHash: String
    private let file: AtomicFile.Pending
    public private(set) var count = 0
    public private(set) var maxTokenId: Int32 = -1
    private var staging: [UInt8] = []

    public init(path: String, vocabSize: Int, tokenizerHash: String) throws {
        self.path = path
        width = TokenShard.width(vocabSize: vocabSize)
        self.tokenizerHash = tokenizerHash
        file = try AtomicFile.Pending(path: path)
        try [UInt8](repeating: 0, count: TokenShard.headerSize).withUnsafeBytes { try file.writer.write($0) }
    }

    public func append(_ tokens: [Int32]) throws {
        guard !tokens.isEmpty else { return }
        staging.removeAll(keepingCapacity: true)
        staging.reserveCapacity(tokens.count * width)
        for t in tokens {
            maxTokenId = max(maxTokenId, t)
            if width == 2 {
                withUnsafeBytes(of: UInt16(truncatingIfNeeded: t).littleEndian) { staging.append(contentsOf: $0) }
            } else {
                withUnsafeBytes(of: t.littleEndian) { staging.append(contentsOf: $0) }
            }
        }
        try staging.withUnsafeBytes { try file.writer.write($0) }
        count += tokens.count
    }

    /// Fills in the header and commits; returns the shard's index entry (its file name without directory).
    public func commit(documents: Int) throws -> DatasetIndex.Shard {
        let header = TokenShard.header(count: count, documents: documents, width: width, tokenizerHash: tokenizerHash)
        try header.withUnsafeBytes { try file.writer.write($0, at: 0) }
        try file.commit()
        return .init(
            file: (path as NSString).lastPathComponent, tokens: count, documents: documents, maxTokenId: Int(maxTokenId)
        )
    }
}

/// index.json: the sources of a prepared dataset and their shards.
public struct DatasetIndex: Codable, Equatable {
    public struct Shard: Codable, Equatable {
        public var file: String
        public var tokens: Int
        public var documents: Int
        /// The largest token id in the shard, recorded by prepare so a run checks it against the model's
        /// vocabulary when it opens the data, not at the step that draws the token. Absent in older indexes.
        public var maxTokenId: Int?

        enum CodingKeys: String, CodingKey { case file, tokens, documents, maxTokenId = "max_token_id" }

        public init(file: String, tokens: Int, documents: Int, maxTokenId: Int?) {
            (self.file, self.tokens, self.documents, self.maxTokenId) = (file, tokens, documents, maxTokenId)
        }
    }

    public struct Source: Codable, Equatable {
        public var name: String
        public var inputs: [String]
        public var shards: [Shard]
        public var tokens: Int { shards.reduce(0) { $0 + $1.tokens } }

        public init(name: String, inputs: [String], shards: [Shard]) {
            (self.name, self.inputs, self.shards) = (name, inputs, shards)
        }
        public var documents: Int { shards.reduce(0) { $0 + $1.documents } }
    }

    public var version = 1
    public var tokenizerSHA256: String
    public var vocabSize: Int
    public var sources: [Source]

    public init(tokenizerSHA256: String, vocabSize: Int, sources: [Source]) {
        (self.tokenizerSHA256, self.vocabSize, self.sources) = (tokenizerSHA256, vocabSize, sources)
    }

    enum CodingKeys: String, CodingKey {
        case version, tokenizerSHA256 = "tokenizer_sha256", vocabSize = "vocab_size", sources
    }

    public static func load(directory: String) throws -> DatasetIndex {
        let path = directory + "/index.json"
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = UnreadablePath.reason(path)
            throw DatasetError.unreadable(
                file: path,
                reason: reason == UnreadablePath.noSuchFile ? "missing; run `llama-train prepare` first" : reason)
        }
        let index: DatasetIndex
        do {
            index = try JSONDecoder().decode(DatasetIndex.self, from: data)
        } catch {
            throw DatasetError.badShard(file: path, reason: "index is not valid: \(error)")
        }
        var names = Set<String>(), files = Set<String>()
        for source in index.sources {
            guard names.insert(source.name).inserted else {
                throw DatasetError.badShard(
                    file: path, reason: "source '\(source.name)' is listed twice; each source name must be unique")
            }
            for shard in source.shards {
                guard files.insert(shard.file).inserted else {
                    throw DatasetError.badShard(
                        file: path, reason: "shard '\(shard.file)' is listed twice; each shard file must appear once")
                }
                guard !shard.file.contains("/"), shard.file != "..", !shard.file.isEmpty, shard.tokens >= 0,
                    shard.documents >= 0
                else {
                    throw DatasetError.badShard(
                        file: path,
                        reason:
                            "shard entry '\(shard.file)' of '\(source.name)' is not a plain file name with non-negative counts"
                    )
                }
            }
        }
        return index
    }
}
