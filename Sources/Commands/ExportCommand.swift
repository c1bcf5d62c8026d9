// `llama-train export`: a sharded checkpoint (any world size) to config.json + model.safetensors that
// transformers' LlamaForCausalLM loads, with the run's tokenizer beside them. One process, no MPI: the
// parameters-only reader verifies every shard and reads just the parameter section of each.
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
        try HuggingFace.save(config: model.config, layout: model.layout, parameters: model.parameters, directory: out)
        if let tokenizer = manifest.config.train.tokenizer {
            guard let bytes = FileManager.default.contents(atPath: tokenizer) else {
                throw FileError(
                    path: tokenizer, message: "the run's tokenizer cannot be read; the model was exported without it")
            }
            try AtomicFile.write(bytes, to: out + "/tokenizer.model")
            let chat = manifest.config.finetune?.template.huggingFaceJinja
            for file in try Tokenizer(path: tokenizer).huggingFaceFiles(
                maxLength: model.config.maxSeqLen, chatTemplate: chat)
            {
                try AtomicFile.write(file.bytes, to: out + "/" + file.name)
            }
        }
        print("exported step \(manifest.step) of \(checkpoint) to \(out)")
    }
}
