// The parameters-only reader: a checkpoint's model without its optimizer state and without MPI, for
// `export`, `finetune.init_from` and anything else that only needs the weights. Every shard is verified
// against the manifest's SHA-256, then only the parameter section of each is read (a third of its bytes).
import Configuration
import Foundation
import Model
import Support

public enum CheckpointReader {
    /// The manifest and the model of the checkpoint directory `checkpoint` (a step directory).
    public static func loadModel(_ checkpoint: String) throws -> (CheckpointManifest, LlamaModel) {
        let manifest = try readManifest(checkpoint)
        try manifest.config.validate(file: checkpoint + "/manifest.json")
        let model = try LlamaModel(config: manifest.config.model, purpose: .inference)
        guard model.parameters.count == manifest.parameterCount,
            CheckpointManifest.layoutHash(model.layout) == manifest.layoutSHA256
        else {
            throw CheckpointError.incompatible(
                file: checkpoint + "/manifest.json",
                reason: "its parameter count or layout does not match its own model block")
        }
        for shard in manifest.shards {
            try verifyShard(shard, in: checkpoint)
            let path = checkpoint + "/" + shard.file
            guard let handle = FileHandle(forReadingAtPath: path) else {
                throw CheckpointError.missingShard(file: path)
            }
            defer { try? handle.close() }
            // The parameter section is the shard's pieces end to end.
            let held = shard.held
            guard let data = try handle.read(upToCount: 4 * held.count), data.count == 4 * held.count else {
                throw CheckpointError.truncatedShard(file: path, expected: shard.bytes, actual: -1)
            }
            data.withUnsafeBytes { raw in
                let floats = raw.bindMemory(to: Float.self).baseAddress!
                for piece in held.pieces {
                    (model.parameters.pointer + piece.range.lowerBound).update(
                        from: floats + piece.local, count: piece.range.count)
                }
            }
        }
        try model.layout.checkFinite(model.parameters, source: checkpoint)
        return (manifest, model)
    }
}
