// Sharded checkpoints: one directory per step, one shard per rank, a manifest that commits them.
//
// Layout of checkpoints/step-00001200/:
//   shard-00000-of-00002.bin  rank 0's flat range of parameters, then of AdamW's m, then of v (float32 LE)
//   shard-00001-of-00002.bin  rank 1's range; rank r owns [r·P, min((r+1)·P, N)) with P = ⌈N / ranks⌉
//   manifest.json             written last: format, step, tokens, the config, world size, the next batch,
//                             and for every shard its range, byte length and SHA-256
// Commit protocol (PyTorch DCP's, with Megatron's checksums): every rank writes its shard to a temporary
// file, fsyncs and renames it; a gather brings the hashes to rank 0 (a barrier), which writes the manifest to
// a temporary file, fsyncs, renames it and fsyncs the directory. A directory without a manifest is not a
// checkpoint. Older checkpoints are pruned only after the new one is committed, keeping at least two.
import Configuration
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

    public var formatVersion = 1
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

    enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version", step, tokensSeen = "tokens_seen", nextBatch = "next_batch"
        case adamStep = "adam_step", worldSize = "world_size", parameterCount = "parameter_count"
        case layoutSHA256 = "layout_sha256", seed, config, shards, savedAt = "saved_at"
    }

    /// Rank r's flat range on `worldSize` ranks, the buffers padded to a multiple of the world size.
    public static func range(rank: Int, worldSize: Int, count: Int) -> Range<Int> {
        let per = (count + worldSize - 1) / worldSize
        return min(rank * per, count)..<min((rank + 1) * per, count)
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
        case let .unreadableManifest(f, r): "\(f): manifest does not parse: \(r)"
        case let .missingShard(f): "\(f): shard is missing"
        case let .truncatedShard(f, e, a): "\(f): shard has \(a) bytes, the manifest says \(e)"
        case let .checksumMismatch(f, e, a): "\(f): SHA-256 mismatch: expected \(e), actual \(a)"
        case let .incompatible(f, r): "\(f): cannot resume this run from it: \(r)"
        case let .noValidCheckpoint(d): "\(d): no checkpoint verifies"
        case let .verificationFailed(c): "\(c): shards fail verification (each named above by the rank that checked it)"
        }
    }
}

/// The committed checkpoints of a directory, newest first (those whose manifest exists).
public func committedCheckpoints(in directory: String) -> [String] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    return names.filter { $0.hasPrefix("step-") && FileManager.default.fileExists(atPath: "\(directory)/\($0)/manifest.json") }
        .sorted(by: >).map { "\(directory)/\($0)" }
}

public func readManifest(_ checkpoint: String) throws -> CheckpointManifest {
    let path = checkpoint + "/manifest.json"
    guard let data = FileManager.default.contents(atPath: path) else { throw CheckpointError.missingManifest(directory: checkpoint) }
    do {
        return try JSONDecoder().decode(CheckpointManifest.self, from: data)
    } catch {
        throw CheckpointError.unreadableManifest(file: path, reason: "\(error)")
    }
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
