// `llama-train sft`, `reward` and `dpo`: the fine-tuning stages, data-parallel like pretraining (same
// loop, flags, checkpoints and resume), and `llama-train reward score`.
import Checkpoint
import Configuration
import Distributed
import FineTune
import Foundation
import Inference
import Kernels
import Model
import Support
import Tokenizer
import Tools
import Training

enum FineTuneCommands {
    /// The finetune-block keys that declare a flag (--template); they override the file's.
    static let fineTuneFlags = FineTuneSettings.settings.flags
    static let sftSpec = CommandSpec(
        name: "sft",
        summary:
            "supervised fine-tuning on dialogues (prompt/response or messages), loss on the assistant's tokens only",
        flags: PretrainCommand.trainingFlags + fineTuneFlags,
        run: sft)
    static let rewardSpec = CommandSpec(
        name: "reward",
        summary: "a reward model: scalar head, ranking loss with a rating margin, held-out accuracy per rating",
        flags: PretrainCommand.trainingFlags + fineTuneFlags,
        run: reward)
    static let dpoSpec = CommandSpec(
        name: "dpo",
        summary:
            "direct preference optimisation on preference pairs against the starting model's log-probs (finetune.dpo_beta)",
        flags: PretrainCommand.trainingFlags + fineTuneFlags,
        run: dpo)
    static let scoreSpec = CommandSpec(
        name: "reward score",
        summary:
            "JSON Lines dialogues ({\"prompt\", \"response\"} or {\"messages\"}) on stdin, each back with its \"reward\"",
        flags: [
            Flag("checkpoint", .text, "DIR", required: true, "a reward model's Hugging Face directory"),
            Flag("svg", .text, "FILE.svg", "also draw the density of the scores"),
            Flag(
                "truncate", .choice(Truncation.allCases.map(\.rawValue)), "", default: "refuse",
                "a prompt longer than the context: refuse it, or keep its last (left) or first (right) tokens"),
        ] + TemplateFlags.flags,
        run: score)

    /// The shared part: config with a finetune block (validated before any data is read), tokenizer, template,
    /// the trainer's options from the flags.
    static func prepare(
        _ args: Arguments, stage: TrainingStage
    ) throws -> (RunConfig, String, FineTuneSettings, ChatTemplate, TrainOptions) {
        let (config, path) = try PretrainCommand.loadConfig(args)
        try config.validate(file: path)
        guard let finetune = config.finetune else {
            throw ConfigError(
                file: path, field: "finetune",
                message: "is required for \(stage.rawValue): {\"data\": FILE.jsonl, \"init_from\": DIR, ...}")
        }
        guard let tokenizerPath = config.train.tokenizer else {
            throw ConfigError(file: path, field: "train.tokenizer", message: "is required for \(stage.rawValue)")
        }
        let options = try PretrainCommand.options(args)
        lm_set_blas_threads(Int32(options.threads))
        let template = try ChatTemplate(
            finetune.template, tokenizer: try Tokenizer(path: tokenizerPath), separator: finetune.separator)
        return (config, path, finetune, template, options)
    }

    /// A fine-tuning stage's length: its epochs over the data, unless --steps gave it (at least one step).
    static func schedule(
        _ config: inout RunConfig, epochs: Int, examplesPerEpoch: Int, examplesPerStep: Int, explicitSteps: Bool
    ) {
        guard !explicitSteps else { return }
        config.train.steps = max(1, epochs * examplesPerEpoch / max(1, examplesPerStep))
    }

    static func sft(_ args: inout Arguments) throws {
        let explicitSteps = args.string("steps")
        var (config, path, finetune, template, options) = try prepare(args, stage: .sft)
        let world = try Communicator.world()
        let log: (String) -> Void = world.isRoot ? { print($0) } : { _ in }
        // Read once across the ranks: each tokenizes and keeps the examples of its 1/N of the file.
        let dialogues = try DialogueData.load(finetune.data, preferences: false, world: world, log: log).1.compactMap {
            item -> Dialogue? in
            if case let .dialogue(d) = item.example { return d } else { return nil }
        }
        let store = try ShardedExamples(
            local: SFTPacker.encode(dialogues, template: template), world: world, encode: SFTExample.encode,
            decode: SFTExample.decode)
        // Every example's length on every rank (the packing's arithmetic), and the set's totals.
        var lengths = [Double](repeating: 0, count: store.total)
        var totals = [0.0, 0.0, 0.0]  // examples longer than a sequence, tokens, answer tokens
        for (g, e) in store.local {
            lengths[g] = Double(e.tokens.count)
            totals[0] += e.tokens.count > config.train.seqLen ? 1 : 0
            totals[1] += Double(e.tokens.count)
            totals[2] += Double(e.answer.filter { $0 }.count)
        }
        if world.size > 1 {
            try lengths.withUnsafeMutableBufferPointer { try world.allreduceSum($0.baseAddress!, count: $0.count) }
            try totals.withUnsafeMutableBufferPointer { try world.allreduceSum($0.baseAddress!, count: 3) }
        }
        // Packed as Llama 2 packs: an example longer than a sequence continues into the next one; said, counted.
        let (long, total, answers) = (Int(totals[0]), Int(totals[1]), Int(totals[2]))
        if long > 0 {
            log(
                "sft: \(long) of \(store.total) example(s) are longer than seq_len \(config.train.seqLen) tokens; packing carries them across sequences"
            )
        }
        let packer = try SFTPacker(
            examples: store, lengths: lengths.map { Int($0) }, seqLen: config.train.seqLen, seed: config.train.seed)
        schedule(
            &config, epochs: finetune.epochs, examplesPerEpoch: packer.sequencesPerEpoch,
            examplesPerStep: config.train.globalBatchSequences, explicitSteps: explicitSteps != nil)
        log(
            "sft: \(store.total) dialogues (\(finetune.template.rawValue) template), \(total) tokens (\(answers) answer tokens) per epoch, packed into \(packer.sequencesPerEpoch) sequences of \(config.train.seqLen); \(finetune.epochs) epoch(s) = \(config.train.steps) steps"
        )
        let objective = LanguageModelObjective(source: packer, settings: config.train, name: "supervised fine-tuning")
        let trainer = try Trainer(
            config: config, configPath: path, world: world, options: options,
            plan: StagePlan(.sft, objective: objective))
        try PretrainCommand.finish(trainer.run(), trainer: trainer, options: options)
    }

    static func reward(_ args: inout Arguments) throws {
        let explicitSteps = args.string("steps")
        var (config, path, finetune, template, options) = try prepare(args, stage: .reward)
        config.model.heads = [.score]
        let world = try Communicator.world()
        let log: (String) -> Void = world.isRoot ? { print($0) } : { _ in }
        let pairs = try preferencePairs(
            &config, finetune: finetune, template: template, explicitSteps: explicitSteps != nil, world: world,
            log: log)
        log(
            "reward model: \(pairs.total) preference pairs, margin '\(finetune.margin.rawValue)', \(finetune.epochs) epoch(s) = \(config.train.steps) steps, warm-up \(config.train.warmupSteps)"
        )
        let objective = try RewardObjective(
            pairs: pairs, pairsPerBatch: finetune.pairsPerBatch, microBatchSequences: config.train.microBatch,
            seqLen: config.train.seqLen, seed: config.train.seed, padToken: template.tokenizer.eosId)
        let trainer = try Trainer(
            config: config, configPath: path, world: world, options: options,
            plan: StagePlan(.reward, objective: objective))
        let outcome = try trainer.run()
        guard outcome.completed else { throw StoppedEarly() }
        if let eval = finetune.evalData {
            // Every rank scores its share of the held-out pairs with the model as trained (its own part of it
            // under sharding full): no gather onto rank 0.
            let held = try PreferenceData.load(
                eval, template: template, seqLen: config.train.seqLen, margin: finetune.margin, log: log)
            let start = monotonicSeconds()
            let result = try RewardEvaluation.run(
                model: trainer.model, pairs: held, padToken: template.tokenizer.eosId,
                batchPairs: max(1, config.train.microBatch / 2), world: world)
            if world.isRoot {
                try report(
                    result, eval: eval, pairs: held.count, seconds: monotonicSeconds() - start, ranks: world.size,
                    scores: "reward scores", options: options)
            }
        }
        if world.isRoot, let out = options.outputDirectory { print("saved the reward model to \(out)") }
    }

    /// The preference pairs of a stage, read once across the ranks, and the schedule they make.
    static func preferencePairs(
        _ config: inout RunConfig, finetune: FineTuneSettings, template: ChatTemplate, explicitSteps: Bool,
        world: Communicator, log: (String) -> Void
    ) throws -> ShardedExamples<PreferencePair> {
        let pairs = try ShardedExamples(
            local: try PreferenceData.load(
                finetune.data, template: template, seqLen: config.train.seqLen, margin: finetune.margin, world: world,
                log: log),
            world: world, encode: PreferencePair.encode, decode: PreferencePair.decode)
        // The batch is counted in pairs; the token count keeps checkpoints' batch arithmetic consistent.
        config.train.globalBatchTokens = finetune.pairsPerBatch * 2 * config.train.seqLen
        schedule(
            &config, epochs: finetune.epochs, examplesPerEpoch: pairs.total, examplesPerStep: finetune.pairsPerBatch,
            explicitSteps: explicitSteps)
        config.train.warmupSteps = Int((finetune.warmupFraction * Double(config.train.steps)).rounded(.up))
        return pairs
    }

    /// Prints a held-out evaluation (accuracy per rating, margins), its score density beside --out and its
    /// JSON line. Rank 0 only.
    static func report(
        _ result: RewardEvaluation, eval: String, pairs: Int, seconds: Double, ranks: Int, scores: String,
        options: TrainOptions
    ) throws {
        print("held-out evaluation on \(eval):\n\(result.table())")
        if let out = options.outputDirectory {
            let chart = out + "/eval-scores.svg"
            try AtomicFile.write(
                Data(
                    ScoreDensityChart.svg(
                        series: [("chosen", result.chosenScores), ("rejected", result.rejectedScores)],
                        title: "\(scores) on \((eval as NSString).lastPathComponent)"
                    ).utf8), to: chart)
            print("score density of chosen and rejected responses: \(chart)")
        }
        print(
            String(
                format: "{\"eval_accuracy\": %.4f, \"eval_pairs\": %d, \"eval_seconds\": %.3f, \"eval_ranks\": %d}",
                result.accuracy, pairs, seconds, ranks))
    }

    /// `llama-train dpo`: the policy starts from finetune.init_from, which is also the reference; the loss is
    /// DPO's on the pairs of finetune.data, with held-out accuracy on finetune.eval_data at the end.
    static func dpo(_ args: inout Arguments) throws {
        let explicitSteps = args.string("steps")
        var (config, path, finetune, template, options) = try prepare(args, stage: .dpo)
        let world = try Communicator.world()
        let log: (String) -> Void = world.isRoot ? { print($0) } : { _ in }
        let pairs = try preferencePairs(
            &config, finetune: finetune, template: template, explicitSteps: explicitSteps != nil, world: world,
            log: log)
        let held = try finetune.evalData.map {
            try PreferenceData.load(
                $0, template: template, seqLen: config.train.seqLen, margin: finetune.margin, log: log)
        }
        log(
            "DPO: \(pairs.total) preference pairs, β \(finetune.dpoBeta), \(finetune.epochs) epoch(s) = \(config.train.steps) steps, warm-up \(config.train.warmupSteps); the reference is the starting model (\(finetune.initFrom ?? "the seed's"))"
        )
        let objective = try DPOObjective(
            pairs: pairs, evalPairs: held ?? [], pairsPerBatch: finetune.pairsPerBatch,
            microBatchSequences: config.train.microBatch, seqLen: config.train.seqLen, seed: config.train.seed,
            padToken: template.tokenizer.eosId, beta: finetune.dpoBeta)
        let trainer = try Trainer(
            config: config, configPath: path, world: world, options: options,
            plan: StagePlan(.dpo, objective: objective))
        let outcome = try trainer.run()
        guard outcome.completed else { throw StoppedEarly() }
        if let eval = finetune.evalData, let held {
            let start = monotonicSeconds()
            let result = try objective.evaluate(model: trainer.model, world: world)
            if world.isRoot {
                try report(
                    result, eval: eval, pairs: held.count, seconds: monotonicSeconds() - start, ranks: world.size,
                    scores: "implicit rewards β·(log π − log π_ref)", options: options)
            }
        }
        if world.isRoot, let out = options.outputDirectory { print("saved the DPO policy to \(out)") }
    }

    /// `llama-train reward score --checkpoint DIR`: JSON Lines dialogues on standard input, each line back with
    /// its "reward" (read at the formatted dialogue's last token), in input order. Under mpirun, rank 0 reads
    /// standard input and shares it; every rank scores its share through the inference engine's prefill, and
    /// rank 0 writes. (Held-out evaluation during training keeps RewardScoring.scoreAll: there the model may be
    /// sharded by units, which the engine does not read.)
    static func score(_ args: inout Arguments) throws {
        let directory = try args.require("checkpoint")
        if let svg = args.string("svg") {
            try PathClash.check(outputs: [.file("--svg", svg)], inputs: [("--checkpoint", directory)])
        }
        let model = try HuggingFace.loadModel(directory: directory)
        guard model.config.heads.contains(.score) else {
            throw TrainingError("\(directory) is a language model, not a reward model (no score.weight head)")
        }
        let template = try TemplateFlags.template(args, tokenizer: try Tokenizer(path: directory + "/tokenizer.model"))
        let truncation = Truncation(rawValue: args.string(declared: "truncate"))!
        let world = try Communicator.world()
        var input: [UInt8] = []
        if world.isRoot {
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let n = read(0, &chunk, chunk.count)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { break }
                input += chunk[0..<n]
            }
        }
        if world.size > 1 { input = try world.broadcast(bytes: input) }
        var objects: [[String: Any]] = [], sequences: [[Int32]] = []
        for line in TextLines.lines(input, source: "standard input") {
            let text = try line.text.get(), n = line.number
            if text.allSatisfy(\.isWhitespace) { continue }
            guard let o = JSONLines.object(text), let format = DialogueData.format(of: o), !format.isPreference,
                case let .dialogue(dialogue) = try DialogueData.example(o, format)
            else {
                throw UsageError("standard input line \(n): needs {\"prompt\", \"response\"} or {\"messages\": [...]}")
            }
            objects.append(o)
            sequences.append(
                try truncation.apply(
                    template.encode(dialogue).tokens, limit: model.config.maxSeqLen, what: "standard input line \(n)"))
        }
        // The inference engine's prefill, one dialogue at a time with no padding: dialogue i on rank i mod N,
        // one allreduce (each score is on one rank and zero on the others, so the sum is exact).
        let engine = try InferenceEngine(model: model, slots: 1)
        var sums = [Double](repeating: 0, count: sequences.count)
        for i in stride(from: world.rank, to: sequences.count, by: world.size) {
            sums[i] = Double(try engine.reward(sequences[i]))
        }
        try sums.withUnsafeMutableBufferPointer { try world.allreduceSum($0.baseAddress!, count: $0.count) }
        let scores = sums.map { Float($0) }
        guard world.isRoot else { return }
        for (o, reward) in zip(objects, scores) {
            var out = o
            out["reward"] = Double(reward)
            FileHandle.standardOutput.write(
                try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys]) + Data("\n".utf8))
        }
        if let svg = args.string("svg") {
            try AtomicFile.write(
                Data(ScoreDensityChart.svg(series: [("scored", scores.map(Double.init))], title: "reward scores").utf8),
                to: svg)
        }
    }
}
