// `llama-train ppo --config FILE`: PPO on the prompts of finetune.data, the policy starting from
// finetune.init_from (also the frozen reference), the value model from ppo.value_model (default the reward
// model: its trunk, and its score head as the value head), judged by ppo.reward_model and
// ppo.safety_reward_model through Llama 2's gate. One optimizer step per mini-batch (PPOObjective), both
// trained models with their own AdamW and clipping; the policy's learning rate is train.lr held constant.
// `--rollouts FILE.jsonl` replays fixed rollouts instead of sampling (debugging, and the reference test).
import Configuration
import Distributed
import FineTune
import Foundation
import Inference
import Model
import Support
import Tools
import Training

enum PPOCommand {
    static let spec = CommandSpec(
        name: "ppo",
        summary:
            "RLHF by PPO (Llama 2): sample, score through the reward models' gate, GAE, clipped policy and value updates",
        flags: PretrainCommand.trainingFlags + FineTuneCommands.fineTuneFlags + PPOSettings.settings.flags + [
            Flag(
                "rollouts", .text, "FILE.jsonl",
                "replay fixed rollouts instead of sampling: {\"prompt_ids\", \"response_ids\"[, \"safety\"]} per line, ppo.batch_size lines per iteration in order"
            )
        ],
        run: run)

    static func run(_ args: inout Arguments) throws {
        var (config, path, finetune, template, options) = try FineTuneCommands.prepare(args, stage: .ppo)
        guard var ppo = config.ppo else {
            throw ConfigError(
                file: path, field: "ppo",
                message: "is required for ppo: {\"reward_model\": DIR, \"batch_size\": 512, ...}")
        }
        args.apply(PPOSettings.settings, to: &ppo)
        config.ppo = ppo
        // Llama 2's PPO: a constant learning rate, one step per mini-batch.
        config.train.warmupSteps = 0
        config.train.minLRRatio = 1
        config.train.steps = ppo.iterations * ppo.miniBatches
        try config.validate(file: path)
        let world = try Communicator.world()
        let log: (String) -> Void = world.isRoot ? { print($0) } : { _ in }
        let t = config.train
        let models = try PPOObjective.models(config: config, file: path)
        func prompts(_ file: String) throws -> [PPOPrompt] {
            try RejectionSampleCommand.readItems(file).enumerated().map { i, item in
                PPOPrompt(
                    ids: try Truncation.refuse.apply(
                        template.encode(item.dialogue).tokens, limit: config.model.maxSeqLen - ppo.maxTokens,
                        what: "\(file) prompt \(i + 1)"),
                    safety: item.safety)
            }
        }
        let (train, heldOut) = (try prompts(finetune.data), try finetune.evalData.map(prompts) ?? [])
        let fixed = try args.string("rollouts").map { try readRollouts($0, batch: ppo.batchSize) }
        if let fixed, fixed.count < ppo.iterations {
            throw UsageError(
                "--rollouts holds \(fixed.count) iteration(s) of \(ppo.batchSize); ppo.iterations is \(ppo.iterations)")
        }
        log(
            "PPO: \(train.count) prompts (\(heldOut.count) held out), \(ppo.iterations) iteration(s) of \(ppo.batchSize) rollouts in mini-batches of \(ppo.miniBatchSize) = \(config.train.steps) steps; β \(ppo.klCoef), ε \(ppo.clip), γ \(ppo.gamma), λ \(ppo.lam), T \(ppo.temperature); policy lr \(t.learningRate), value lr \(ppo.valueLR ?? t.learningRate)\(fixed == nil ? "" : "; replaying --rollouts")"
        )
        let objective = PPOObjective(
            settings: ppo, microBatch: t.microBatch, prompts: train, evalPrompts: heldOut, fixed: fixed,
            tokenizer: template.tokenizer,
            padToken: template.tokenizer.eosId, log: log)
        let trainer = try Trainer(
            config: config, configPath: path, world: world, options: options,
            plan: StagePlan(.ppo, objective: objective, extraModels: models))
        let outcome = try trainer.run()
        guard outcome.completed else { throw StoppedEarly() }
        try objective.finishIteration()
        if !heldOut.isEmpty { try objective.evaluate(afterIteration: ppo.iterations) }
        // The curves, beside the policy: each iteration's statistics as JSON Lines, reward and KL as SVG.
        guard world.isRoot, let out = options.outputDirectory else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var lines = Data()
        for s in objective.iterations { lines += try encoder.encode(s) + Data("\n".utf8) }
        for e in objective.evaluations { lines += try encoder.encode(e) + Data("\n".utf8) }
        try AtomicFile.write(lines, to: out + "/ppo-iterations.jsonl")
        func series(_ xs: [Int], _ ys: [Double]) -> PPOChart.Series {
            .init(iterations: xs.map(Double.init), values: ys)
        }
        let (its, evals) = (objective.iterations, objective.evaluations)
        let svg = PPOChart.svg(
            reward: (
                series(its.map(\.iteration), its.map(\.rawReward)),
                series(evals.map(\.afterIteration), evals.map(\.rawReward))
            ),
            kl: (series(its.map(\.iteration), its.map(\.kl)), series(evals.map(\.afterIteration), evals.map(\.kl))),
            title: "PPO: reward and KL to the reference")
        try AtomicFile.write(Data(svg.utf8), to: out + "/ppo.svg")
        print("PPO curves: \(out)/ppo.svg, \(out)/ppo-iterations.jsonl")
    }

    /// --rollouts: `batch` lines per iteration, in order.
    static func readRollouts(_ file: String, batch: Int) throws -> [[PPORollout]] {
        let rollouts = try GenerateCommand.objects(file, flag: "rollouts").map { at, o -> PPORollout in
            // A non-empty list of ids that each fit a token id.
            func ids(_ key: String) -> [Int32]? {
                guard let values = o[key] as? [Int], !values.isEmpty else { return nil }
                let ids = values.compactMap(Int32.init(exactly:))
                return ids.count == values.count ? ids : nil
            }
            guard let prompt = ids("prompt_ids"), let response = ids("response_ids") else {
                throw UsageError("\(at): needs non-empty \"prompt_ids\" and \"response_ids\" (lists of token ids)")
            }
            return PPORollout(prompt: PPOPrompt(ids: prompt, safety: o["safety"] as? Bool ?? false), response: response)
        }
        guard rollouts.count % batch == 0, !rollouts.isEmpty else {
            throw UsageError("\(file): \(rollouts.count) rollouts are not whole iterations of ppo.batch_size \(batch)")
        }
        return stride(from: 0, to: rollouts.count, by: batch).map { Array(rollouts[$0..<($0 + batch)]) }
    }
}
