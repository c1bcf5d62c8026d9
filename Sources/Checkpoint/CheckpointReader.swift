// The parameters-only reader: a checkpoint's model without its optimizer state and without MPI, for
// `export`, `finetune.init_from` and anything else that only needs the weights.
//
// CheckpointWeights reads any range of the parameters from whichever shards hold it. A shard is verified
// before its bytes are used: its parameter section against the manifest's `section_sha256` (read once,
// streamed), or, for a checkpoint of an earlier build without section hashes, the whole file. A rank that
// loads only its own pieces, from a checkpoint of the same layout, so reads and hashes about P/N floats.
import Configuration
import Foundation
import Model
import Support

public final class CheckpointWeights: WeightSource {
    public let checkpoint: String
    public let manifest: CheckpointManifest
    /// The source's own layout: tensors are found by name, so a model with other heads reads the shared ones.
    public let layout: ParameterLayout
    private var opened: [Int: FileReader] = [:]

    public var location: String { checkpoint }
    public var config: LlamaConfig { manifest.config.model }

    public init(_ checkpoint: String) throws {
        self.checkpoint = checkpoint
        manifest = try readManifest(checkpoint)
        try manifest.config.validate(file: checkpoint + "/manifest.json")
        layout = ParameterLayout(config: manifest.config.model)
        guard layout.count == manifest.parameterCount,
            CheckpointManifest.layoutHash(layout) == manifest.layoutSHA256
        else {
            throw CheckpointError.incompatible(
                file: checkpoint + "/manifest.json",
                reason: "its parameter count or layout does not match its own model block")
        }
    }

    public func shape(of name: String) -> [Int]? { layout.spec(named: name)?.shape }

    public func read(_ name: String, elements: Range<Int>, into destination: UnsafeMutablePointer<Float>) throws {
        guard let spec = layout.spec(named: name) else {
            throw CheckpointError.incompatible(file: checkpoint, reason: "it has no tensor \(name)")
        }
        try read(global: (spec.offset + elements.lowerBound)..<(spec.offset + elements.upperBound), into: destination)
    }

    /// The parameters' flat range `global` into `destination`, from every shard holding part of it.
    public func read(global: Range<Int>, into destination: UnsafeMutablePointer<Float>) throws {
        for (k, shard) in manifest.shards.enumerated()
        where shard.start < global.upperBound && global.lowerBound < shard.end {
            for piece in shard.held.pieces {
                let overlap = piece.range.clamped(to: global)
                guard !overlap.isEmpty else { continue }
                let file = try verifiedShard(k)
                let whole = try file.read(
                    into: destination + (overlap.lowerBound - global.lowerBound), count: 4 * overlap.count,
                    at: 4 * (piece.local + overlap.lowerBound - piece.range.lowerBound))
                guard whole else {
                    throw CheckpointError.truncatedShard(file: file.path, expected: shard.bytes, actual: file.size)
                }
            }
        }
    }

    /// Shard k, opened and verified on first use.
    private func verifiedShard(_ k: Int) throws -> FileReader {
        if let file = opened[k] { return file }
        let shard = manifest.shards[k]
        let path = checkpoint + "/" + shard.file
        guard FileManager.default.fileExists(atPath: path) else { throw CheckpointError.missingShard(file: path) }
        let file: FileReader
        do { file = try FileReader(path: path) } catch let error as FileError {
            throw CheckpointError.unreadable(file: path, reason: error.message)
        }
        guard file.size == shard.bytes else {
            throw CheckpointError.truncatedShard(file: path, expected: shard.bytes, actual: file.size)
        }
        let (range, expected) =
            shard.sectionSHA256.map { (0..<(4 * shard.held.count), $0[0]) } ?? (0..<shard.bytes, shard.sha256)
        let actual = try file.sha256(of: range) ?? "nothing (the file shrank while read)"
        guard actual == expected else {
            throw CheckpointError.checksumMismatch(file: path, expected: expected, actual: actual)
        }
        opened[k] = file
        return file
    }
}

public enum CheckpointReader {
    /// The manifest and the whole model of the checkpoint directory `checkpoint` (a step directory), read
    /// from the parameter sections alone.
    public static func loadModel(_ checkpoint: String) throws -> (CheckpointManifest, LlamaModel) {
        let weights = try CheckpointWeights(checkpoint)
        let model = try LlamaModel(config: weights.config, purpose: .inference)
        try weights.read(global: 0..<model.parameters.count, into: model.parameters.pointer)
        try model.layout.checkFinite(model.parameters, source: checkpoint)
        return (weights.manifest, model)
    }
}
