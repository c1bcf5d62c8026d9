// Sharded checkpoints: one directory per step, one shard per rank, a manifest that commits them.
//
// Layout of checkpoints/step-00001200/:
//   shard-00000-of-00002.bin  rank 0's flat range of parameters, then of AdamW's m, then of v (float32 LE)
//   shard-00001-of-00002.bin  rank 1's range; rank r owns [r·P, min((r+1)·P, N)) with P = ⌈N / ranks⌉
//   manifest.json             written last: format, stage, step, tokens, the config, world size, the next
//                             batch, for every shard its range, byte length and SHA-256, and the SHA-256 of
//                             the manifest itself (canonical JSON with that field empty)
// Commit protocol (PyTorch DCP's, with Megatron's checksums): every rank writes its shard to a temporary
// file, fsyncs and renames it; a gather brings the hashes to rank 0 (a barrier), which writes the manifest to
// a temporary file, fsyncs, renames it and fsyncs the directory. A directory without a manifest is not a
// checkpoint. Older checkpoints are pruned only after the new one is committed, keeping at least two.
import Configuration
import Distributed
import Foundation
import Model
import Support

public struct CheckpointManifest: Codable, Sendable {
    public struct Shard: Codable, Sendable {
        public var file: String
        public var rank: Int
        /// Global flat range [start, end) of the parameter buffer this shard holds (and of m and v).
        public var start: Int
        public var end: Int
        public var bytes: Int
        public var sha256: String
    }

    /// 2 adds `stage` and `manifest_sha256`; version 1 manifests (pretraining, no self-checksum) still load.
    public var formatVersion = CheckpointManifest.currentFormat
    public static let currentFormat = 2
    public var stage: TrainingStage
    public var step: Int
    public var tokensSeen: Int
    /// The global batch index that comes next: batch k is a function of (seed, k), so this is the data position.
    public var nextBatch: Int
    public var adamStep: Int
    public var worldSize: Int
    public var parameterCount: Int
    /// SHA-256 of the tensor names and shapes in layout order: a checkpoint of another model is refused.
    public var layoutSHA256: String
    /// Everything random is derived from this seed and the step (initialisation, data order); no other state.
    public var seed: UInt64
    public var config: RunConfig
    public var shards: [Shard]
    public var savedAt: String
    /// SHA-256 of this manifest's canonical JSON (sorted keys) with this field empty: an edited step or
    /// swapped shard entries are caught before anything is loaded.
    public var manifestSHA256: String

    enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version", stage, step, tokensSeen = "tokens_seen", nextBatch = "next_batch"
        case adamStep = "adam_step", worldSize = "world_size", parameterCount = "parameter_count"
        case layoutSHA256 = "layout_sha256", seed, config, shards, savedAt = "saved_at", manifestSHA256 = "manifest_sha256"
    }

    public init(stage: TrainingStage, step: Int, tokensSeen: Int, nextBatch: Int, adamStep: Int, worldSize: Int, parameterCount: Int,
                layoutSHA256: String, seed: UInt64, config: RunConfig, shards: [Shard], savedAt: String) {
        (self.stage, self.step, self.tokensSeen, self.nextBatch, self.adamStep) = (stage, step, tokensSeen, nextBatch, adamStep)
        (self.worldSize, self.parameterCount, self.layoutSHA256, self.seed) = (worldSize, parameterCount, layoutSHA256, seed)
        (self.config, self.shards, self.savedAt, self.manifestSHA256) = (config, shards, savedAt, "")
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        formatVersion = try c.decode(Int.self, forKey: .formatVersion)
        stage = try c.decodeIfPresent(TrainingStage.self, forKey: .stage) ?? .pretrain
        step = try c.decode(Int.self, forKey: .step)
        tokensSeen = try c.decode(Int.self, forKey: .tokensSeen)
        nextBatch = try c.decode(Int.self, forKey: .nextBatch)
        adamStep = try c.decode(Int.self, forKey: .adamStep)
        worldSize = try c.decode(Int.self, forKey: .worldSize)
        parameterCount = try c.decode(Int.self, forKey: .parameterCount)
        layoutSHA256 = try c.decode(String.self, forKey: .layoutSHA256)
        seed = try c.decode(UInt64.self, forKey: .seed)
        config = try c.decode(RunConfig.self, forKey: .config)
        shards = try c.decode([Shard].self, forKey: .shards)
        savedAt = try c.decode(String.self, forKey: .savedAt)
        manifestSHA256 = try c.decodeIfPresent(String.self, forKey: .manifestSHA256) ?? ""
    }

    static let emptyChecksumField = Data(#""manifest_sha256" : """#.utf8)

    /// The manifest as written: pretty JSON whose `manifest_sha256` is the SHA-256 of the file's own bytes
    /// with that field empty. Hashing the bytes (not a re-encoding) keeps old manifests verifiable when
    /// later versions add fields.
    public func sealed() throws -> Data {
        var copy = self
        copy.manifestSHA256 = ""
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let blank = try encoder.encode(copy)
        guard let field = blank.range(of: Self.emptyChecksumField) else { throw CheckpointError.unreadableManifest(file: "-", reason: "cannot seal") }
        var sealed = blank
        sealed.replaceSubrange(field, with: Data(#""manifest_sha256" : "\#(SHA256.hex(Array(blank)))""#.utf8))
        return sealed
    }

    /// The SHA-256 of `data` (a manifest file) with its checksum field emptied, or nil when it has none.
    static func bytesHash(_ data: Data, stated: String) -> String? {
        guard let field = data.range(of: Data(#""manifest_sha256" : "\#(stated)""#.utf8)) else { return nil }
        var blank = data
        blank.replaceSubrange(field, with: emptyChecksumField)
        return SHA256.hex(Array(blank))
    }

    /// Checks the self-checksum and every field a resume relies on; the error names the field.
    public func validate(file: String) throws {
        func bad(_ reason: String) -> CheckpointError { .unreadableManifest(file: file, reason: reason) }
        guard formatVersion == 1 || formatVersion == CheckpointManifest.currentFormat else {
            throw CheckpointError.incompatible(file: file, reason: "format version \(formatVersion); this build reads 1 and \(CheckpointManifest.currentFormat)")
        }
        guard step >= 0, step <= 1 << 40 else { throw bad("step \(step) is outside 0...2^40") }
        guard nextBatch == step else { throw bad("next_batch \(nextBatch) differs from step \(step)") }
        guard adamStep >= 0, adamStep <= step else { throw bad("adam_step \(adamStep) is outside 0...step (\(step))") }
        guard tokensSeen >= 0 else { throw bad("tokens_seen \(tokensSeen) is negative") }
        guard worldSize >= 1, worldSize <= 1 << 24, shards.count == worldSize else {
            throw bad("world_size \(worldSize) with \(shards.count) shard entries")
        }
        guard parameterCount >= 1, parameterCount <= 1 << 42 else { throw bad("parameter_count \(parameterCount) is outside 1...2^42") }
        for (rank, shard) in shards.enumerated() {
            let expected = CheckpointManifest.range(rank: rank, worldSize: worldSize, count: parameterCount)
            guard shard.rank == rank, shard.file == CheckpointManifest.shardName(rank: rank, worldSize: worldSize) else {
                throw bad("shard entry \(rank) is '\(shard.file)' for rank \(shard.rank); expected \(CheckpointManifest.shardName(rank: rank, worldSize: worldSize))")
            }
            guard shard.start == expected.lowerBound, shard.end == expected.upperBound, shard.bytes == 12 * expected.count else {
                throw bad("shard \(shard.file) covers [\(shard.start), \(shard.end)) in \(shard.bytes) bytes; rank \(rank) of \(worldSize) owns [\(expected.lowerBound), \(expected.upperBound)) in \(12 * expected.count)")
            }
            guard shard.sha256.count == 64, shard.sha256.allSatisfy(\.isHexDigit) else { throw bad("shard \(shard.file) has no SHA-256") }
        }
    }

    /// Rank r's flat range on `worldSize` ranks: the FlatPartition that sharded training owns by.
    public static func range(rank: Int, worldSize: Int, count: Int) -> Range<Int> {
        FlatPartition(count: count, ranks: worldSize).range(rank: rank)
    }

    public static func shardName(rank: Int, worldSize: Int) -> String {
        String(format: "shard-%05d-of-%05d.bin", rank, worldSize)
    }

    public static func directoryName(step: Int) -> String { String(format: "step-%08d", step) }

    public static func layoutHash(_ layout: ParameterLayout) -> String {
        SHA256.hex(Array(layout.tensors.map { "\($0.name):\($0.shape)" }.joined(separator: ";").utf8))
    }
}

public enum CheckpointError: Error, CustomStringConvertible {
    case missingManifest(directory: String)
    case unreadableManifest(file: String, reason: String)
    case missingShard(file: String)
    case truncatedShard(file: String, expected: Int, actual: Int)
    case checksumMismatch(file: String, expected: String, actual: String)
    case incompatible(file: String, reason: String)
    case noValidCheckpoint(directory: String)
    case verificationFailed(checkpoint: String)

    public var description: String {
        switch self {
        case let .missingManifest(d): "\(d): no manifest.json, so not a committed checkpoint"
        case let .unreadableManifest(f, r): "\(f): manifest is not valid: \(r)"
        case let .missingShard(f): "\(f): shard is missing"
        case let .truncatedShard(f, e, a): "\(f): shard has \(a) bytes, the manifest says \(e)"
        case let .checksumMismatch(f, e, a): "\(f): SHA-256 mismatch: expected \(e), actual \(a)"
        case let .incompatible(f, r): "\(f): cannot resume this run from it: \(r)"
        case let .noValidCheckpoint(d): "\(d): no checkpoint verifies"
        case let .verificationFailed(c): "\(c): shards fail verification (each named above by the rank that checked it)"
        }
    }
}

/// The committed checkpoints of a directory (those whose manifest exists), newest first by the manifest's
/// step; a manifest that does not parse sorts by its directory name's step, so a resume can report it.
public func committedCheckpoints(in directory: String) -> [String] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    let committed = names.filter { $0.hasPrefix("step-") && FileManager.default.fileExists(atPath: "\(directory)/\($0)/manifest.json") }
    func step(_ name: String) -> Int { (try? readManifest("\(directory)/\(name)").step) ?? Int(name.dropFirst(5)) ?? -1 }
    return committed.map { (step($0), $0) }.sorted { $0.0 != $1.0 ? $0.0 > $1.0 : $0.1 > $1.1 }.map { "\(directory)/\($0.1)" }
}

public func readManifest(_ checkpoint: String) throws -> CheckpointManifest {
    let path = checkpoint + "/manifest.json"
    guard let data = FileManager.default.contents(atPath: path) else { throw CheckpointError.missingManifest(directory: checkpoint) }
    let manifest: CheckpointManifest
    do {
        manifest = try JSONDecoder().decode(CheckpointManifest.self, from: data)
    } catch let error as DecodingError {
        throw CheckpointError.unreadableManifest(file: path, reason: "field '\(error.fieldPath)' \(error.reason)")
    } catch {
        throw CheckpointError.unreadableManifest(file: path, reason: "\(error)")
    }
    if manifest.formatVersion >= 2 {
        let actual = CheckpointManifest.bytesHash(data, stated: manifest.manifestSHA256)
        guard actual == manifest.manifestSHA256 else {
            throw CheckpointError.unreadableManifest(file: path, reason: "manifest_sha256 is \(manifest.manifestSHA256), the file hashes to \(actual ?? "nothing (no checksum field)"): the manifest was edited or damaged")
        }
    }
    try manifest.validate(file: path)
    return manifest
}

/// Checks one shard against the manifest: present, of the stated length, with the stated SHA-256.
public func verifyShard(_ shard: CheckpointManifest.Shard, in checkpoint: String) throws {
    let path = checkpoint + "/" + shard.file
    guard let data = try? Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) else {
        throw CheckpointError.missingShard(file: path)
    }
    guard data.count == shard.bytes else { throw CheckpointError.truncatedShard(file: path, expected: shard.bytes, actual: data.count) }
    let actual = data.withUnsafeBytes { SHA256.hex($0) }
    guard actual == shard.sha256 else { throw CheckpointError.checksumMismatch(file: path, expected: shard.sha256, actual: actual) }
}
