// `llama-train sft` and `llama-train reward`: the fine-tuning stages, data-parallel like pretraining (same
// loop, flags, checkpoints and resume), and `llama-train reward score`.
import Checkpoint
import Configuration
import Distributed
import FineTune
import Foundation
import Kernels
import Model
import Support
import Tokenizer
import Tools
import Training

enum FineTuneCommands {
    static let sftSpec = CommandSpec(
        name: "sft",
        summary: "supervised fine-tuning: packed prompt <sep> response, loss on answer tokens only (the config's finetune block)",
        flags: PretrainCommand.trainingFlags,
        run: sft)
    static let rewardSpec = CommandSpec(
        name: "reward",
        summary: "a reward model: scalar head, ranking loss with a rating margin, held-out accuracy per rating",
        flags: PretrainCommand.trainingFlags,
        run: reward)
    static let scoreSpec = CommandSpec(
        name: "reward score",
        summary: "JSON Lines {\"prompt\", \"response\"} on stdin, each back with its \"reward\"",
        flags: [
            Flag("checkpoint", .text, "DIR", required: true, "a reward model's Hugging Face directory"),
            Flag("separator", .text, "S", "the piece between prompt and response (default <sep>)"),
        ],
        run: score)

    /// The shared part: config with a finetune block (validated before any data is read), tokenizer, the
    /// trainer's options from the flags.
    static func prepare(_ args: Arguments, stage: TrainingStage) throws -> (RunConfig, String, FineTuneSettings, Tokenizer, TrainOptions) {
        let (config, path) = try PretrainCommand.loadConfig(args)
        try config.validate(file: path)
        guard let finetune = config.finetune else {
            throw ConfigError(file: path, field: "finetune", message: "is required for \(stage.rawValue): {\"data\": FILE.jsonl, \"init_from\": DIR, ...}")
        }
        guard let tokenizerPath = config.train.tokenizer else {
            throw ConfigError(file: path, field: "train.tokenizer", message: "is required for \(stage.rawValue)")
        }
        let options = try PretrainCommand.options(args)
        lm_set_blas_threads(Int32(args.int("threads", default: 1)))
        return (config, path, finetune, try Tokenizer(path: tokenizerPath), options)
    }

    static func sft(_ args: inout Arguments) throws {
        let explicitSteps = args.string("steps")
        var (config, path, finetune, tokenizer, options) = try prepare(args, stage: .sft)
        let world = try Communicator.world()
        let log: (String) -> Void = world.isRoot ? { print($0) } : { _ in }
        let format = try SeparatorFormat(tokenizer: tokenizer, separator: finetune.separator)
        let raw = try readExamples(finetune.data, fields: ["prompt", "response"], log: log)
        let examples = SFTPacker.encode(raw.map { ($0["prompt"]!, $0["response"]!) }, format: format)
        let packer = try SFTPacker(examples: examples, seqLen: config.train.seqLen, seed: config.train.seed)
        if explicitSteps == nil {
            config.train.steps = max(1, finetune.epochs * packer.sequencesPerEpoch / config.train.globalBatchSequences)
        }
        let answers = examples.reduce(0) { $0 + $1.answer.filter { $0 }.count }, total = examples.reduce(0) { $0 + $1.tokens.count }
        log("sft: \(examples.count) examples, \(total) tokens (\(answers) answer tokens) per epoch, packed into \(packer.sequencesPerEpoch) sequences of \(config.train.seqLen); \(finetune.epochs) epoch(s) = \(config.train.steps) steps")
        let objective = LanguageModelObjective(source: packer, settings: config.train, name: "supervised fine-tuning")
        let trainer = try Trainer(config: config, configPath: path, world: world, options: options, stage: .sft, objective: objective)
        try PretrainCommand.finish(trainer.run(), trainer: trainer, options: options)
    }

    static func reward(_ args: inout Arguments) throws {
        let explicitSteps = args.string("steps")
        var (config, path, finetune, tokenizer, options) = try prepare(args, stage: .reward)
        config.model.rewardHead = true
        let world = try Communicator.world()
        let log: (String) -> Void = world.isRoot ? { print($0) } : { _ in }
        let format = try SeparatorFormat(tokenizer: tokenizer, separator: finetune.separator)
        let pairs = try PreferenceData.load(finetune.data, format: format, seqLen: config.train.seqLen,
                                            margin: finetune.margin, log: log)
        // The batch is counted in pairs; the token count keeps checkpoints' batch arithmetic consistent.
        config.train.globalBatchTokens = finetune.pairsPerBatch * 2 * config.train.seqLen
        if explicitSteps == nil { config.train.steps = max(1, finetune.epochs * pairs.count / finetune.pairsPerBatch) }
        config.train.warmupSteps = Int((finetune.warmupFraction * Double(config.train.steps)).rounded(.up))
        log("reward model: \(pairs.count) preference pairs, margin '\(finetune.margin)', \(finetune.epochs) epoch(s) = \(config.train.steps) steps, warm-up \(config.train.warmupSteps)")
        let objective = try RewardObjective(pairs: pairs, pairsPerBatch: finetune.pairsPerBatch, microBatchSequences: config.train.microBatch,
                                            seqLen: config.train.seqLen, seed: config.train.seed, padToken: tokenizer.eosId)
        let trainer = try Trainer(config: config, configPath: path, world: world, options: options, stage: .reward, objective: objective)
        let outcome = try trainer.run()
        guard outcome.completed else { throw StoppedEarly() }
        let whole = finetune.evalData == nil ? nil : try trainer.wholeModel()
        if let whole, let eval = finetune.evalData {
            let held = try PreferenceData.load(eval, format: format, seqLen: config.train.seqLen,
                                               margin: finetune.margin, log: log)
            let result = try RewardEvaluation.run(model: whole, pairs: held, seqLen: config.train.seqLen,
                                                  padToken: tokenizer.eosId, batchPairs: max(1, config.train.microBatch / 2))
            print("held-out evaluation on \(eval):\n\(result.table())")
            print(String(format: "{\"eval_accuracy\": %.4f, \"eval_pairs\": %d}", result.accuracy, held.count))
        }
        if world.isRoot, let out = options.outputDirectory { print("saved the reward model to \(out)") }
    }

    /// `llama-train reward score --checkpoint DIR [--separator S]`: JSON Lines {"prompt", "response"} on
    /// standard input, each line back with its "reward".
    static func score(_ args: inout Arguments) throws {
        let directory = try args.require("checkpoint")
        let separatorText = args.string("separator") ?? "<sep>"
        let model = try HuggingFace.loadModel(directory: directory)
        guard model.config.rewardHead else { throw TrainingError("\(directory) is a language model, not a reward model (no score.weight head)") }
        let tokenizer = try Tokenizer(path: directory + "/tokenizer.model")
        let format = try SeparatorFormat(tokenizer: tokenizer, separator: separatorText)
        var n = 0
        while let line = readLine() {
            n += 1
            if line.isEmpty { continue }
            guard let o = JSONLines.object(line),
                  let prompt = o["prompt"] as? String, let response = o["response"] as? String
            else { throw UsageError("standard input line \(n): needs string fields prompt and response") }
            let ids = Array((format.prompt(prompt) + format.answer(response)).suffix(model.config.maxSeqLen))
            let r = try RewardScoring.score(ids, model: model, padToken: tokenizer.eosId)
            var out = o
            out["reward"] = Double(r)
            FileHandle.standardOutput.write(try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys]) + Data("\n".utf8))
        }
    }
}
