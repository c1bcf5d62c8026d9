// `llama-train export`: a sharded checkpoint (any world size) to a Hugging Face directory that transformers'
// Auto classes load: config.json, the weights in bf16 by default (as published checkpoints are; --dtype),
// split into model-0000k-of-0000n.safetensors with an index above --max-shard-gb, and the run's tokenizer
// with its configs. One process, no MPI: the parameters-only reader verifies every shard and reads just the
// parameter section of each.
//
//   llama-train export --checkpoint runs/m/checkpoints/step-00000300 --out runs/m/hf
import Checkpoint
import Foundation
import Model
import Support
import Tokenizer

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
                "max-shard-gb", .number(min: 0, inclusive: false, max: 1e6), "GB", default: "5",
                "above this, the weights are split at tensor boundaries into model-0000k-of-0000n.safetensors with an index"
            ),
        ],
        run: run)

    static func run(_ args: inout Arguments) throws {
        let checkpoint = try args.require("checkpoint")
        let out = try args.require("out")
        let (manifest, model) = try CheckpointReader.loadModel(checkpoint)
        try PathClash.check(
            outputs: [
                .directory(
                    "--out", out,
                    writing: HuggingFace.writtenFiles + ["tokenizer.model"] + Tokenizer.huggingFaceFileNames)
            ],
            inputs: [("--checkpoint", checkpoint)]
                + (manifest.config.train.tokenizer.map { [("train.tokenizer", $0)] } ?? []))
        AtomicFile.removeStaleTemporaries(in: out, log: { print($0) })
        let dtype: SafeTensorsDType = ["bf16": .bf16, "fp16": .f16, "fp32": .f32][args.string(declared: "dtype")]!
        let maxShard = args.number(declared: "max-shard-gb") * 1e9
        try HuggingFace.save(
            config: model.config, layout: model.layout, parameters: model.parameters, directory: out, dtype: dtype,
            maxShardBytes: maxShard >= Double(Int.max) ? Int.max : Int(maxShard))
        if let tokenizer = manifest.config.train.tokenizer {
            guard let bytes = FileManager.default.contents(atPath: tokenizer) else {
                throw FileError(
                    path: tokenizer, message: "the run's tokenizer cannot be read; the model was exported without it")
            }
            try Tokenizer.writeHuggingFace(
                bytes, source: tokenizer, to: out, maxLength: model.config.maxSeqLen,
                chatTemplate: manifest.config.finetune?.template.huggingFaceJinja)
        }
        print("exported step \(manifest.step) of \(checkpoint) to \(out) as \(dtype.torchName)")
    }
}
