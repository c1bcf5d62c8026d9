// `llama-train eval`: a saved language model on held-out data. --data: the mean next-token loss and perplexity
// over a prepared directory's windows, by the code the trainer's validation loss runs (ValidationLoss), so the
// two agree on the same windows. --choices: multiple-choice accuracy in HellaSwag's shape, {"context",
// "endings": [...], "label"}: each ending scored as a completion of its context (the engine's log-probs, as
// `score` computes them), the answer the ending of the highest summed log-likelihood, and, length-normalised
// as llm.c does, of the highest mean per token. Data-parallel under mpirun: windows in micro-batches b on rank
// b mod N, examples i on rank i mod N, one allreduce each; the results do not depend on N.
import Dataset
import Distributed
import Foundation
import Inference
import Kernels
import Model
import Support
import Tokenizer
import Training

enum EvalCommand {
    static let spec = CommandSpec(
        name: "eval",
        summary: "a saved model's perplexity on prepared data, and multiple-choice accuracy (HellaSwag's shape)",
        flags: [
            Flag("checkpoint", .text, "DIR", required: true, "a language model's Hugging Face directory"),
            Flag("data", .text, "DIR", "token shards written by `llama-train prepare` with this model's tokenizer"),
            Flag(
                "choices", .text, "FILE.jsonl",
                "{\"context\", \"endings\": [...], \"label\"} per line: accuracy by summed and by per-token log-likelihood"
            ),
            Flag(
                "seq-len", .int(min: 1, max: 1 << 24), "T",
                "--data: tokens per window (default: the model's max_seq_len; the run's train.seq_len to compare with its validation loss)"
            ),
            Flag(
                "windows", .int(min: 1, max: 1 << 40), "N",
                "--data: at most N windows, spread evenly (default: every window)"),
            Flag(
                "holdout", .number(min: 0, inclusive: false, max: 1), "F",
                "--data: only the windows a run with train.eval_holdout F held out of this directory (its "
                    + "train.data), which is what its validation loss read"),
            Flag("micro-batch", .int(min: 1, max: 1 << 20), "B", default: "4", "--data: windows per forward"),
            Flag("threads", .int(min: 1, max: 4096), "T", default: "1", "threads per rank"),
        ],
        run: eval)

    static func eval(_ args: inout Arguments) throws {
        let directory = try args.require("checkpoint")
        let (data, choices) = (args.string("data"), args.string("choices"))
        guard data != nil || choices != nil else { throw args.usage("eval needs --data DIR, --choices FILE, or both") }
        let threads = args.int(declared: "threads")
        lm_set_blas_threads(Int32(threads))
        lm_set_matmul_threads(Int32(threads))
        let model = try HuggingFace.loadModel(directory: directory)
        model.threads = threads
        guard model.config.heads.contains(.lm) else {
            throw UsageError("\(directory) has no lm_head: a reward model is evaluated by `reward score`")
        }
        let tokenizerPath = directory + "/tokenizer.model"
        guard let tokenizerBytes = FileManager.default.contents(atPath: tokenizerPath) else {
            throw UsageError("cannot read \(tokenizerPath): eval reads the checkpoint's tokenizer")
        }
        let world = try Communicator.world()
        var summary: [String: Any] = ["checkpoint": directory, "ranks": world.size]
        if let data {
            let seqLen = min(args.int("seq-len") ?? model.config.maxSeqLen, model.config.maxSeqLen)
            let (hash, limit) = (SHA256.hex([UInt8](tokenizerBytes)), args.int("windows") ?? Int.max)
            let set: ValidationSet
            if let holdout = args.string("holdout").flatMap(Double.init) {
                let loader = try MixtureLoader(
                    directory: data, tokenizerHash: hash, seqLen: seqLen, seed: 0, vocabSize: model.config.vocabSize,
                    holdout: holdout)
                set = ValidationSet.heldOut(by: loader, limit: limit)
            } else {
                set = try ValidationSet.directory(
                    data, tokenizerHash: hash, seqLen: seqLen, vocabSize: model.config.vocabSize, limit: limit)
            }
            let r = try ValidationLoss.run(
                model: model, set: set, microBatch: args.int(declared: "micro-batch"), world: world)
            if world.isRoot {
                print(
                    String(
                        format: "eval: loss %.6f, perplexity %.4f over %d tokens (%@, %d tokens each) in %.1f s",
                        r.loss,
                        r.perplexity, r.tokens, set.description, seqLen + 1, r.seconds))
            }
            summary["loss"] = r.loss
            summary["perplexity"] = r.perplexity
            summary["tokens"] = r.tokens
            summary["windows"] = set.windows.count
            summary["seq_len"] = seqLen
        }
        if let choices {
            let tokenizer = try Tokenizer(path: tokenizerPath)
            let r = try multipleChoice(choices, model: model, tokenizer: tokenizer, threads: threads, world: world)
            if world.isRoot {
                print(
                    String(
                        format: "choices: accuracy %.4f by summed log-likelihood, %.4f by per-token mean, %d examples",
                        r.accuracy, r.normalizedAccuracy, r.examples))
            }
            summary["accuracy"] = r.accuracy
            summary["accuracy_norm"] = r.normalizedAccuracy
            summary["examples"] = r.examples
        }
        if world.isRoot {
            print(
                String(
                    decoding: try JSONSerialization.data(withJSONObject: summary, options: [.sortedKeys]), as: UTF8.self
                ))
        }
    }

    struct ChoiceResult {
        var correct = 0.0, normalizedCorrect = 0.0
        var examples = 0
        var accuracy: Double { correct / Double(max(examples, 1)) }
        var normalizedAccuracy: Double { normalizedCorrect / Double(max(examples, 1)) }
    }

    /// Every line is read and checked on every rank (a bad one is refused before any work, naming it); rank r
    /// scores examples r, r + N, …
    static func multipleChoice(
        _ file: String, model: LlamaModel, tokenizer: Tokenizer, threads: Int, world: Communicator
    ) throws -> ChoiceResult {
        let examples = try GenerateCommand.objects(file, flag: "choices").map { at, o in
            guard let context = o["context"] as? String, let endings = o["endings"] as? [String], endings.count >= 2
            else { throw UsageError("\(at): needs {\"context\": TEXT, \"endings\": [TEXT, TEXT, ...], \"label\": N}") }
            guard let n = o["label"] as? NSNumber, n.doubleValue == Double(n.intValue),
                endings.indices.contains(n.intValue)
            else {
                throw UsageError("\(at): \"label\" must be the index of the right ending, 0 to \(endings.count - 1)")
            }
            let sequences = try endings.enumerated().map { i, ending in
                try ScoreCommand.sequence(
                    ["prompt": context, "completion": " " + ending], at: "\(at) ending \(i)", tokenizer: tokenizer,
                    template: nil)
            }
            for (i, s) in sequences.enumerated() where s.0.count > model.config.maxSeqLen {
                throw UsageError(
                    "\(at): ending \(i) makes \(s.0.count) tokens with its context; the model reads \(model.config.maxSeqLen)"
                )
            }
            return (sequences: sequences, label: n.intValue)
        }
        let engine = try InferenceEngine(model: model, slots: 1, threads: threads)
        var counts = [0.0, 0.0]
        for i in stride(from: world.rank, to: examples.count, by: world.size) {
            let (sequences, label) = examples[i]
            let scores = try sequences.map { tokens, scored in
                let logprobs = try engine.logprobs(tokens: tokens, scored: scored)
                return (sum: logprobs.reduce(0, +), mean: logprobs.reduce(0, +) / Double(logprobs.count))
            }
            // The first of equal scores wins, as an argmax does.
            let best = scores.indices.max {
                scores[$0].sum < scores[$1].sum || (scores[$0].sum == scores[$1].sum && $0 > $1)
            }!
            let bestMean = scores.indices.max {
                scores[$0].mean < scores[$1].mean || (scores[$0].mean == scores[$1].mean && $0 > $1)
            }!
            counts[0] += best == label ? 1 : 0
            counts[1] += bestMean == label ? 1 : 0
        }
        try counts.withUnsafeMutableBufferPointer { try world.allreduceSum($0.baseAddress!, count: 2) }
        return ChoiceResult(correct: counts[0], normalizedCorrect: counts[1], examples: examples.count)
    }
}
