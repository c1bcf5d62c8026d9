// `llama-train export`: a sharded checkpoint (any world size) to a Hugging Face directory that transformers'
// Auto classes load: config.json, the weights in bf16 by default (as published checkpoints are; --dtype),
// split into model-0000k-of-0000n.safetensors with an index above --max-shard-size, and the run's tokenizer
// with its configs. Alone, one process reads and writes the whole model; under mpirun each rank reads its
// share (⌈S/N⌉ of every unit, verifying the parameter sections of the shards it touches) and writes it in
// place, so no rank holds more than its part.
//
//   llama-train export --checkpoint runs/m/checkpoints/step-00000300 --out runs/m/hf
//   mpirun -np 8 llama-train export --checkpoint … --out …
import Checkpoint
import Distributed
import Foundation
import Model
import Support
import Tokenizer
import Training

enum ExportCommand {
    static let spec = CommandSpec(
        name: "export",
        summary: "a sharded checkpoint to config.json + model.safetensors (Hugging Face LlamaForCausalLM)",
        flags: [
            Flag("checkpoint", .text, "DIR", required: true, "a step directory with manifest.json"),
            Flag("out", .text, "HF_DIR", required: true, "the Hugging Face directory to write"),
            Flag(
                "dtype", .choice(["bf16", "fp16", "fp32"]), "", default: "bf16",
                "the weights' format: bf16 as published checkpoints are, or fp16, or fp32 as trained"),
            Flag(
                "max-shard-size", .text, "SIZE", default: "5GB",
                "above this, the weights are split at tensor boundaries into model-0000k-of-0000n.safetensors with an index"
            ),
        ],
        run: run)

    static func run(_ args: inout Arguments) throws {
        let checkpoint = try args.require("checkpoint")
        let out = try args.require("out")
        let weights = try CheckpointWeights(checkpoint)
        let manifest = weights.manifest
        try PathClash.check(
            outputs: [
                .directory(
                    "--out", out,
                    writing: HuggingFace.writtenFiles + ["tokenizer.model"] + Tokenizer.huggingFaceFileNames)
            ],
            inputs: [("--checkpoint", checkpoint)]
                + (manifest.config.train.tokenizer.map { [("train.tokenizer", $0)] } ?? []))
        let tokenizer = try manifest.config.train.tokenizer.map { path in
            guard let bytes = FileManager.default.contents(atPath: path) else {
                throw FileError(
                    path: path, message: "the run's tokenizer cannot be read: \(UnreadablePath.reason(path))")
            }
            return (path, bytes)
        }
        let sizeText = args.string(declared: "max-shard-size")
        guard let maxShard = SafeTensorsDType.shardBytes(sizeText) else {
            throw UsageError("--max-shard-size: '\(sizeText)' is not a size; give it as 5GB, 900MB, 2GiB or bytes")
        }
        let world = try Communicator.world()
        if world.isRoot { AtomicFile.removeStaleTemporaries(in: out, log: { print($0) }) }
        // This rank's share, read straight into one buffer of its size.
        let layout = weights.layout
        let held = UnitPartition(units: layout.units, ranks: world.size).held(rank: world.rank)
        let buffer = FloatBuffer(count: held.count)
        for piece in held.pieces { try weights.read(global: piece.range, into: buffer.pointer + piece.local) }
        try layout.checkFinite(buffer, held: held, source: checkpoint)
        let dtype = SafeTensorsDType(option: args.string(declared: "dtype"))
        try exportHuggingFace(
            config: weights.config, layout: layout,
            ranges: held.pieces.map { ($0.range, UnsafePointer(buffer.pointer + $0.local)) }, world: world,
            directory: out, dtype: dtype,
            maxShardBytes: maxShard
        ) { staging in
            guard let (path, bytes) = tokenizer else { return }
            try Tokenizer.writeHuggingFace(
                bytes, source: path, to: staging, maxLength: weights.config.maxSeqLen,
                chatTemplate: manifest.config.finetune?.template.huggingFaceJinja)
        }
        if world.isRoot {
            print(
                "exported step \(manifest.step) of \(checkpoint) to \(out) as \(dtype.torchName) from \(world.size) rank(s)"
            )
        }
    }
}
