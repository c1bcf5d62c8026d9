// Sharded checkpoints: one directory per step, one shard per rank, a manifest that commits them.
//
// Layout of checkpoints/step-00001200/:
//   shard-00000-of-00002.bin  rank 0's pieces of the parameters, then of AdamW's m, then of v (float32 LE)
//   shard-00001-of-00002.bin  rank 1's pieces. Sharding none and optimizer write one flat range per rank,
//                             [r·P, min((r+1)·P, N)) with P = ⌈N / ranks⌉ (`start`, `end`); gradients and
//                             full write what they own, ⌈S/ranks⌉ of every unit, listed in `pieces` (format 4)
//   manifest.json             written last: format, stage, step, tokens, the config, world size, the next
//                             batch, for every shard its range, byte length and SHA-256, and the SHA-256 of
//                             the manifest itself (canonical JSON with that field empty)
// A stage of several models (PPO's policy, value, reference and reward; a student and its teacher) keeps its
// primary model in the fields above and every other one in `models`: its name, model block, and shards named
// NAME-shard-00000-of-00002.bin holding three sections (parameters, m, v) for a trained model or one
// (parameters) for a frozen one. A checkpoint of one model has no `models` and reads as before (format 2).
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
        /// Global flat range [start, end) of the parameter buffer this shard holds (and of m and v): all of
        /// it without `pieces`, else the span from the first piece's start to the last one's end.
        public var start: Int
        public var end: Int
        public var bytes: Int
        public var sha256: String
        /// The global ranges [start, end) the shard holds end to end in each section, when not one range.
        public var pieces: [[Int]]?
        /// The SHA-256 of each section (parameters, m, v): a reader of the parameters alone verifies just
        /// those bytes. Absent in checkpoints of earlier builds, which are verified whole.
        public var sectionSHA256: [String]?

        public init(
            file: String, rank: Int, start: Int, end: Int, bytes: Int, sha256: String, pieces: [[Int]]? = nil,
            sectionSHA256: [String]? = nil
        ) {
            (self.file, self.rank, self.start, self.end, self.bytes, self.sha256) = (
                file, rank, start, end, bytes, sha256
            )
            (self.pieces, self.sectionSHA256) = (pieces, sectionSHA256)
        }

        enum CodingKeys: String, CodingKey {
            case file, rank, start, end, bytes, sha256, pieces, sectionSHA256 = "section_sha256"
        }

        /// What the shard holds, in file order.
        public var held: HeldPieces {
            guard let pieces else { return HeldPieces([start..<end]) }
            return HeldPieces(pieces.map { $0[0]..<$0[1] })
        }
    }

    /// One more model of the stage, beside the primary.
    public struct ModelShards: Codable, Sendable {
        public var name: String
        public var model: LlamaConfig
        public var parameterCount: Int
        public var layoutSHA256: String
        /// AdamW's step count; nil for a frozen model (no optimizer state).
        public var adamStep: Int?
        /// Sections per shard: 3 (parameters, m, v) for a trained model, 1 (parameters) for a frozen one.
        public var sections: Int
        public var shards: [Shard]

        public init(
            name: String, model: LlamaConfig, parameterCount: Int, layoutSHA256: String, adamStep: Int?, sections: Int,
            shards: [Shard]
        ) {
            (self.name, self.model, self.parameterCount, self.layoutSHA256) = (
                name, model, parameterCount, layoutSHA256
            )
            (self.adamStep, self.sections, self.shards) = (adamStep, sections, shards)
        }

        enum CodingKeys: String, CodingKey {
            case name, model, parameterCount = "parameter_count", layoutSHA256 = "layout_sha256", adamStep = "adam_step"
            case sections, shards
        }
    }

    /// 2 adds `stage` and `manifest_sha256`; 3 adds `models` (a stage of several models); 4 adds shards of
    /// `pieces` (sharding by units). Version 1 manifests (pretraining, no self-checksum) still load.
    /// Written as 2 for a stage of one model (earlier builds read it), 3 with `models`, 4 with pieces.
    public var formatVersion = 2
    public static let currentFormat = 4
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
    /// The primary model's name and the stage's other models (absent for a stage of one model).
    public var modelName: String?
    public var models: [ModelShards]?

    enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version", stage, step, tokensSeen = "tokens_seen", nextBatch = "next_batch"
        case adamStep = "adam_step", worldSize = "world_size", parameterCount = "parameter_count"
        case layoutSHA256 = "layout_sha256", seed, config, shards, savedAt = "saved_at", manifestSHA256 =
            "manifest_sha256"
        case modelName = "model_name", models
    }

    public init(
        stage: TrainingStage, step: Int, tokensSeen: Int, nextBatch: Int, adamStep: Int, worldSize: Int,
        parameterCount: Int,
        layoutSHA256: String, seed: UInt64, config: RunConfig, shards: [Shard], savedAt: String
    ) {
        (self.stage, self.step, self.tokensSeen, self.nextBatch, self.adamStep) = (
            stage, step, tokensSeen, nextBatch, adamStep
        )
        (self.worldSize, self.parameterCount, self.layoutSHA256, self.seed) = (
            worldSize, parameterCount, layoutSHA256, seed
        )
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
        modelName = try c.decodeIfPresent(String.self, forKey: .modelName)
        models = try c.decodeIfPresent([ModelShards].self, forKey: .models)
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
        guard let field = blank.range(of: Self.emptyChecksumField) else {
            throw CheckpointError.unreadableManifest(file: "-", reason: "cannot seal")
        }
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
        guard (1...CheckpointManifest.currentFormat).contains(formatVersion) else {
            throw CheckpointError.incompatible(
                file: file,
                reason: "format version \(formatVersion); this build reads 1 to \(CheckpointManifest.currentFormat)")
        }
        guard step >= 0, step <= 1 << 40 else { throw bad("step \(step) is outside 0...2^40") }
        guard nextBatch == step else { throw bad("next_batch \(nextBatch) differs from step \(step)") }
        guard adamStep >= 0, adamStep <= step else { throw bad("adam_step \(adamStep) is outside 0...step (\(step))") }
        guard tokensSeen >= 0 else { throw bad("tokens_seen \(tokensSeen) is negative") }
        guard worldSize >= 1, worldSize <= 1 << 24, shards.count == worldSize else {
            throw bad("world_size \(worldSize) with \(shards.count) shard entries")
        }
        guard parameterCount >= 1, parameterCount <= 1 << 42 else {
            throw bad("parameter_count \(parameterCount) is outside 1...2^42")
        }
        try Self.validate(
            shards: shards, prefix: "", sections: 3, count: parameterCount, model: config.model, worldSize: worldSize,
            bad)
        let piecewise =
            shards.contains { $0.pieces != nil } || (models ?? []).contains { $0.shards.contains { $0.pieces != nil } }
        guard !piecewise || formatVersion >= 4 else { throw bad("format \(formatVersion) has no shards of pieces") }
        guard models == nil || formatVersion >= 3 else { throw bad("format \(formatVersion) holds no other models") }
        for extra in models ?? [] {
            guard Self.isModelName(extra.name) else { throw bad("model name '\(extra.name)' is not a name") }
            guard extra.name != (modelName ?? "model") else {
                throw bad("model \(extra.name) has the primary model's name")
            }
            guard extra.parameterCount >= 1, extra.parameterCount <= 1 << 42,
                extra.sections == 1 || extra.sections == 3,
                (extra.adamStep == nil) == (extra.sections == 1), (extra.adamStep ?? 0) >= 0,
                (extra.adamStep ?? 0) <= step
            else {
                throw bad(
                    "model \(extra.name): parameter_count \(extra.parameterCount), \(extra.sections) sections, adam_step \(extra.adamStep.map(String.init) ?? "none")"
                )
            }
            try Self.validate(
                shards: extra.shards, prefix: extra.name + "-", sections: extra.sections, count: extra.parameterCount,
                model: extra.model, worldSize: worldSize, bad)
        }
        if let models {
            guard Set(models.map(\.name)).count == models.count else { throw bad("a model is listed twice") }
        }
    }

    /// A model name, safe as a file name prefix: lower-case letters, digits, '_' and '-'.
    public static func isModelName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 64
            && name.allSatisfy { ($0.isASCII && ($0.isLowercase || $0.isNumber)) || $0 == "_" || $0 == "-" }
    }

    /// Shard entry r must be rank r's file, holding what rank r owns (its flat range, or, with `pieces`, its
    /// pieces of every unit of `model`) in `sections` float sections, with a SHA-256.
    static func validate(
        shards: [Shard], prefix: String, sections: Int, count: Int, model: LlamaConfig, worldSize: Int,
        _ bad: (String) -> CheckpointError
    ) throws {
        guard shards.count == worldSize else {
            throw bad("\(prefix)shards: \(shards.count) entries for world_size \(worldSize)")
        }
        let byUnits = shards.first?.pieces != nil
        var partition = UnitPartition.flat(count: count, ranks: worldSize)
        if byUnits {
            do { try model.validate() } catch { throw bad("its model block: \(error)") }
            let layout = ParameterLayout(config: model)
            guard layout.count == count else {
                throw bad("\(prefix)parameter_count \(count) differs from its model block's \(layout.count)")
            }
            partition = UnitPartition(units: layout.units, ranks: worldSize)
        }
        for (rank, shard) in shards.enumerated() {
            let name = prefix + CheckpointManifest.shardName(rank: rank, worldSize: worldSize)
            guard shard.rank == rank, shard.file == name else {
                throw bad("shard entry \(rank) is '\(shard.file)' for rank \(shard.rank); expected \(name)")
            }
            // Plain integer checks first: a hostile value must not reach HeldPieces' arithmetic.
            let listed = shard.pieces ?? []
            guard (shard.pieces != nil) == byUnits,
                listed.allSatisfy({ $0.count == 2 && 0 <= $0[0] && $0[0] < $0[1] && $0[1] <= count }),
                zip(listed, listed.dropFirst()).allSatisfy({ $0[1] <= $1[0] }),
                0 <= shard.start, shard.start <= shard.end, shard.end <= count
            else {
                throw bad(
                    "shard \(shard.file): every shard lists its pieces, or none does (each a [start, end), ascending)")
            }
            let expected =
                byUnits
                ? partition.held(rank: rank) : HeldPieces([Self.range(rank: rank, worldSize: worldSize, count: count)])
            let span =
                byUnits
                ? (expected.ranges.first?.lowerBound ?? 0)..<(expected.ranges.last?.upperBound ?? 0)
                : Self.range(rank: rank, worldSize: worldSize, count: count)
            let bytes = 4 * sections * expected.count
            guard shard.held == expected, shard.start == span.lowerBound, shard.end == span.upperBound,
                shard.bytes == bytes
            else {
                throw bad(
                    "shard \(shard.file) holds \(shard.held.ranges) in \(shard.bytes) bytes; rank \(rank) of \(worldSize) owns \(expected.ranges) in \(bytes)"
                )
            }
            func isHash(_ text: String) -> Bool { text.count == 64 && text.allSatisfy(\.isHexDigit) }
            guard isHash(shard.sha256) else { throw bad("shard \(shard.file) has no SHA-256") }
            if let hashes = shard.sectionSHA256 {
                guard hashes.count == sections, hashes.allSatisfy(isHash) else {
                    throw bad(
                        "shard \(shard.file): section_sha256 needs one SHA-256 for each of its \(sections) sections")
                }
            }
        }
    }

    /// Rank r's flat range on `worldSize` ranks (sharding none and optimizer).
    public static func range(rank: Int, worldSize: Int, count: Int) -> Range<Int> {
        UnitPartition.flat(count: count, ranks: worldSize).piece(ofUnit: 0, rank: rank)
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
    case unreadable(file: String, reason: String)
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
        case let .unreadable(f, r): "\(f): cannot read it: \(r)"
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
    let committed = names.filter {
        $0.hasPrefix("step-") && FileManager.default.fileExists(atPath: "\(directory)/\($0)/manifest.json")
    }
    func step(_ name: String) -> Int {
        (try? readManifest("\(directory)/\(name)").step) ?? Int(name.dropFirst(5)) ?? -1
    }
    return committed.map { (step($0), $0) }.sorted { $0.0 != $1.0 ? $0.0 > $1.0 : $0.1 > $1.1 }.map {
        "\(directory)/\($0.1)"
    }
}

public func readManifest(_ checkpoint: String) throws -> CheckpointManifest {
    let path = checkpoint + "/manifest.json"
    guard let data = FileManager.default.contents(atPath: path) else {
        let reason = UnreadablePath.reason(path)
        guard reason == UnreadablePath.noSuchFile else { throw CheckpointError.unreadable(file: path, reason: reason) }
        throw CheckpointError.missingManifest(directory: checkpoint)
    }
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
            throw CheckpointError.unreadableManifest(
                file: path,
                reason:
                    "manifest_sha256 is \(manifest.manifestSHA256), the file hashes to \(actual ?? "nothing (no checksum field)"): the manifest was edited or damaged"
            )
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
    guard data.count == shard.bytes else {
        throw CheckpointError.truncatedShard(file: path, expected: shard.bytes, actual: data.count)
    }
    let actual = data.withUnsafeBytes { SHA256.hex($0) }
    guard actual == shard.sha256 else {
        throw CheckpointError.checksumMismatch(file: path, expected: shard.sha256, actual: actual)
    }
}
