// The fine-tuning commands as a user runs them: pretrain → sft → reward → score, from our checkpoints and from
// Hugging Face directories, 2 ranks equal to 1, a learnable preference task, and bad data named by line.
import Foundation
import TestSupport
import Testing

/// Synthetic fine-tuning data, a tokenizer with <sep>, and a pretrained tiny model (HF layout and checkpoint).
func fineTuneWorkspace() throws -> String {
    let tool = try toolPath()
    let dir = try scratch()
    let gen = try run(["python3", packageRoot + "/scripts/make-finetune-data.py", dir, "200", "240"])
    try #require(gen.status == 0, "\(gen.stderr)")
    let tok = try run([
        tool, "tokenizer", "train", "--input", dir + "/sft.jsonl", dir + "/prefs.jsonl", "--vocab-size", "400",
        "--user-defined-symbols", "<sep>", "--out", dir + "/tok.model",
    ])
    try #require(tok.status == 0, "\(tok.stderr)")
    let model =
        #""model": {"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 400, "ffn_hidden_size": 64, "max_seq_len": 32}"#
    try """
    {\(model), "train": {"seq_len": 32, "micro_batch": 4, "global_batch_tokens": 256, "steps": 4, "lr": 1e-3, "warmup_steps": 1, "tokenizer": "\(dir)/tok.model"}}
    """.write(toFile: dir + "/pre.json", atomically: true, encoding: .utf8)
    for (name, start) in [("sft-hf", dir + "/pre"), ("sft-ck", dir + "/ck/step-00000004")] {
        try """
        {\(model), "train": {"seq_len": 32, "micro_batch": 2, "global_batch_tokens": 256, "lr": 1e-3, "warmup_steps": 1, "tokenizer": "\(dir)/tok.model"},
         "finetune": {"data": "\(dir)/sft.jsonl", "init_from": "\(start)", "epochs": 1}}
        """.write(toFile: "\(dir)/\(name).json", atomically: true, encoding: .utf8)
    }
    try """
    {\(model), "train": {"seq_len": 32, "micro_batch": 8, "lr": 2e-3, "tokenizer": "\(dir)/tok.model"},
     "finetune": {"data": "\(dir)/prefs.jsonl", "eval_data": "\(dir)/prefs-eval.jsonl", "init_from": "\(dir)/sft", "epochs": 3, "pairs_per_batch": 16}}
    """.write(toFile: dir + "/rm.json", atomically: true, encoding: .utf8)
    let pre = try run([
        tool, "pretrain", "--config", dir + "/pre.json", "--out", dir + "/pre", "--checkpoint-dir", dir + "/ck",
    ])
    try #require(pre.status == 0, "\(pre.stderr)")
    return dir
}

@Suite(.serialized) struct FineTuneCommandTests {
    @Test func sftFromEitherStartAndOnTwoRanks() throws {
        let tool = try toolPath()
        let dir = try fineTuneWorkspace()
        let fromHF = try run([tool, "sft", "--config", dir + "/sft-hf.json", "--out", dir + "/sft", "--steps", "3"])
        #expect(
            fromHF.status == 0 && fromHF.stdout.contains("initialised from \(dir)/pre"),
            "\(fromHF.stdout)\(fromHF.stderr)")
        let fromCheckpoint = try run([
            tool, "sft", "--config", dir + "/sft-ck.json", "--steps", "3", "--out", dir + "/sft-ck",
        ])
        #expect(
            fromCheckpoint.status == 0 && fromCheckpoint.stdout.contains("initialised from \(dir)/ck/step-00000004"),
            "\(fromCheckpoint.stderr)")
        #expect(
            FileManager.default.contents(atPath: dir + "/sft/model.safetensors")
                == FileManager.default.contents(atPath: dir + "/sft-ck/model.safetensors"),
            "the same weights reached through either format train identically")
        // Answer-token averaging over ranks and micro-steps: 2 ranks × 4 micro-steps equal 1 rank × 8.
        let two = try run(
            mpirun2 + [tool, "sft", "--config", dir + "/sft-hf.json", "--out", dir + "/sft-2", "--steps", "3"])
        #expect(two.status == 0, "\(two.stderr)")
        let a = try parameters(dir + "/sft/model.safetensors"), b = try parameters(dir + "/sft-2/model.safetensors")
        #expect(!a.isEmpty && maxDifference(a, b) <= 1e-5)
        // The same examples as Parquet (pyarrow, 3 row groups), each rank reading its row groups: the same run.
        let convert = try run([
            "python3", packageRoot + "/scripts/jsonl-to-parquet.py", dir + "/sft.jsonl", dir + "/sft.parquet", "80",
        ])
        try #require(convert.status == 0, "\(convert.stderr)")
        try String(contentsOfFile: dir + "/sft-hf.json", encoding: .utf8)
            .replacingOccurrences(of: "/sft.jsonl", with: "/sft.parquet")
            .write(toFile: dir + "/sft-parquet.json", atomically: true, encoding: .utf8)
        let parquet = try run(
            mpirun2 + [tool, "sft", "--config", dir + "/sft-parquet.json", "--out", dir + "/sft-pq", "--steps", "3"])
        #expect(parquet.status == 0, "\(parquet.stderr)")
        #expect(
            FileManager.default.contents(atPath: dir + "/sft-pq/model.safetensors")
                == FileManager.default.contents(atPath: dir + "/sft-2/model.safetensors"),
            "Parquet data trains as JSON Lines")
        // Pointed at the pretraining run's checkpoint directory, SFT must refuse, not resume the pretraining run
        // (which would run 0 SFT steps and save the pretrained model as the SFT result).
        let wrong = try run([
            tool, "sft", "--config", dir + "/sft-hf.json", "--checkpoint-dir", dir + "/ck", "--out", dir + "/wrong",
        ])
        expectRefused(wrong, "pretrain run's checkpoint", "sft in a pretraining checkpoint directory")
        #expect(!FileManager.default.fileExists(atPath: dir + "/wrong/model.safetensors"))
        // --metrics naming the SFT data, and --out over the starting model: refused, both files kept.
        let data = FileManager.default.contents(atPath: dir + "/sft.jsonl")
        let onData = try run([tool, "sft", "--config", dir + "/sft-hf.json", "--metrics", dir + "/sft.jsonl"])
        expectRefused(onData, "--metrics", "--metrics on finetune.data")
        #expect(
            onData.stderr.contains("finetune.data") && FileManager.default.contents(atPath: dir + "/sft.jsonl") == data)
        let start = FileManager.default.contents(atPath: dir + "/pre/model.safetensors")
        let overStart = try run([tool, "sft", "--config", dir + "/sft-hf.json", "--out", dir + "/pre"])
        expectRefused(overStart, "finetune.init_from", "--out over init_from")
        #expect(FileManager.default.contents(atPath: dir + "/pre/model.safetensors") == start)
    }

    @Test func sftResumesExactlyAcrossAnEpochBoundary() throws {
        let tool = try toolPath()
        let dir = try fineTuneWorkspace()
        let twoEpochs = try String(contentsOfFile: dir + "/sft-hf.json", encoding: .utf8).replacingOccurrences(
            of: "\"epochs\": 1", with: "\"epochs\": 3")
        try twoEpochs.write(toFile: dir + "/sft-3ep.json", atomically: true, encoding: .utf8)
        let whole = try run(mpirun2 + [tool, "sft", "--config", dir + "/sft-3ep.json", "--out", dir + "/whole"])
        #expect(whole.status == 0, "\(whole.stderr)")
        let steps = Int(whole.stdout.components(separatedBy: " steps").first?.split(separator: " ").last ?? "0") ?? 0
        try #require(steps >= 2, "\(whole.stdout)")
        // Three epochs, stopped in the middle one (steps / 2), so the resumed run crosses an epoch boundary.
        let first = try run(
            mpirun2 + [
                tool, "sft", "--config", dir + "/sft-3ep.json", "--checkpoint-dir", dir + "/ck-sft", "--stop-after",
                "\(steps / 2)",
            ])
        #expect(first.status == 75 && first.stdout.contains("stopped after step \(steps / 2)"), "\(first.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/resumed"), "a stopped run must not write --out")
        let rest = try run(
            mpirun2 + [
                tool, "sft", "--config", dir + "/sft-3ep.json", "--checkpoint-dir", dir + "/ck-sft", "--out",
                dir + "/resumed",
            ])
        #expect(rest.status == 0 && rest.stdout.contains("resumed from"), "\(rest.stdout)\(rest.stderr)")
        #expect(
            FileManager.default.contents(atPath: dir + "/whole/model.safetensors")
                == FileManager.default.contents(atPath: dir + "/resumed/model.safetensors"))
    }

    @Test func rewardModelLearnsThePreferenceTaskAndScores() throws {
        let tool = try toolPath()
        let dir = try fineTuneWorkspace()
        let sft = try run([tool, "sft", "--config", dir + "/sft-hf.json", "--out", dir + "/sft", "--steps", "2"])
        #expect(sft.status == 0, "\(sft.stderr)")
        let r = try run([tool, "reward", "--config", dir + "/rm.json", "--out", dir + "/rm", "--log-every", "100"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("score.weight freshly initialised"), "\(r.stdout)")
        for label in ["Significantly", "Slightly", "Negligibly /", "accuracy", "margin r_c−r_r"] {
            #expect(r.stdout.contains(label))
        }
        let json = try #require(r.stdout.split(separator: "\n").last { $0.contains("eval_accuracy") })
        let accuracy =
            (try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any])["eval_accuracy"] as! Double
        #expect(accuracy >= 0.8, "held-out accuracy \(accuracy) on a task a tiny model can learn (chance is 0.5)")
        // Figure 27's view: the density of chosen and rejected scores, one curve each.
        let chart = try String(contentsOfFile: dir + "/rm/eval-scores.svg", encoding: .utf8)
        #expect(
            chart.hasPrefix("<svg") && chart.components(separatedBy: "<path").count == 3 && chart.contains("chosen")
                && chart.contains("rejected"))
        let score = try run(
            [tool, "reward", "score", "--checkpoint", dir + "/rm", "--svg", dir + "/scores.svg"],
            stdin:
                "{\"prompt\": \"Tell me about the cat.\", \"response\": \"The cat is lovely.\"}\n{\"prompt\": \"Tell me about the cat.\", \"response\": \"The cat is awful.\"}\n"
        )
        let rewards = score.stdout.split(separator: "\n").map {
            (try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any])["reward"] as! Double
        }
        #expect(rewards.count == 2 && rewards[0] > rewards[1], "\(score.stdout)\(score.stderr)")
        #expect(
            FileManager.default.contents(atPath: dir + "/scores.svg").map {
                String(decoding: $0, as: UTF8.self).hasPrefix("<svg")
            } == true)

        // Spread over the ranks, batched by length: the held-out evaluation of the same model (lr 1e-30 keeps
        // it where init_from put it) and the scores of the same dialogues are identical on 1, 2 and 3 ranks,
        // replicated or fully sharded.
        let rm = try String(contentsOfFile: dir + "/rm.json", encoding: .utf8)
        try rm.replacingOccurrences(of: "\"init_from\": \"\(dir)/sft\"", with: "\"init_from\": \"\(dir)/rm\"")
            .replacingOccurrences(of: "\"pairs_per_batch\": 16", with: "\"pairs_per_batch\": 12")
            .replacingOccurrences(of: "\"micro_batch\": 8", with: "\"micro_batch\": 2")
            .replacingOccurrences(of: "\"lr\": 2e-3", with: "\"lr\": 1e-30")
            .write(toFile: dir + "/rm-eval.json", atomically: true, encoding: .utf8)
        // The same pairs as Parquet, read by row groups: the same evaluation.
        for name in ["prefs", "prefs-eval"] {
            let convert = try run([
                "python3", packageRoot + "/scripts/jsonl-to-parquet.py", "\(dir)/\(name).jsonl",
                "\(dir)/\(name).parquet",
                "50", "zstd",
            ])
            try #require(convert.status == 0, "\(convert.stderr)")
        }
        try String(contentsOfFile: dir + "/rm-eval.json", encoding: .utf8)
            .replacingOccurrences(of: ".jsonl\"", with: ".parquet\"")
            .write(toFile: dir + "/rm-eval-parquet.json", atomically: true, encoding: .utf8)
        var evaluations: [String] = []
        for (ranks, mode, config) in [
            (1, "none", "rm-eval"), (2, "full", "rm-eval"), (3, "none", "rm-eval"), (2, "none", "rm-eval-parquet"),
        ] {
            let out = "\(dir)/\(config)-\(ranks)-\(mode)"
            let e = try run(
                mpirunFast + [
                    "-np", "\(ranks)", tool, "reward", "--config", "\(dir)/\(config).json", "--steps", "1",
                    "--sharding",
                    mode, "--out", out, "--log-every", "100",
                ])
            try #require(e.status == 0, "\(mode) on \(ranks): \(e.stderr)")
            let table = e.stdout.components(separatedBy: "held-out evaluation on").last ?? ""
            let svg = String(
                decoding: FileManager.default.contents(atPath: out + "/eval-scores.svg") ?? Data(), as: UTF8.self
            ).replacingOccurrences(of: "prefs-eval.parquet", with: "prefs-eval.jsonl")  // its title names the file
            evaluations.append(
                table.split(separator: "\n").filter {
                    !$0.contains("eval_seconds") && !$0.contains(out) && !$0.contains("prefs-eval.")
                }.joined(
                    separator: "\n") + svg)
            #expect(e.stdout.contains("\"eval_ranks\": \(ranks)"), "\(e.stdout)")
        }
        #expect(evaluations[0].contains("accuracy") && evaluations[0].contains("<svg"))
        #expect(Set(evaluations).count == 1, "the evaluation differs between rank counts or data formats")
        let dialogues = (0..<7).map {
            "{\"prompt\": \"Item \($0)?\", \"response\": \"\(String(repeating: "Fine. ", count: $0 % 4 + 1))\"}"
        }
        let input = dialogues.joined(separator: "\n") + "\n"
        let one = try run([tool, "reward", "score", "--checkpoint", dir + "/rm"], stdin: input)
        let three = try run(
            mpirunFast + ["-np", "3", tool, "reward", "score", "--checkpoint", dir + "/rm"], stdin: input)
        #expect(one.status == 0 && three.status == 0, "\(one.stderr)\(three.stderr)")
        #expect(
            one.stdout.split(separator: "\n").count == 7 && one.stdout == three.stdout, "\(one.stdout)\n\(three.stdout)"
        )
    }

    /// DPO from the SFT model on the preference pairs: the first loss is ln 2 (the policy is its own reference),
    /// the held-out implicit rewards rank the pairs, 2 ranks follow 1, and a run stopped and resumed ends bitwise
    /// where the whole run does, reading the reference log-probs its first start kept; without them it refuses.
    @Test func dpoLearnsOnTwoRanksAndResumesFromItsReferenceLogProbs() throws {
        let tool = try toolPath()
        let dir = try fineTuneWorkspace()
        let sft = try run([tool, "sft", "--config", dir + "/sft-hf.json", "--out", dir + "/sft", "--steps", "2"])
        #expect(sft.status == 0, "\(sft.stderr)")
        try String(contentsOfFile: dir + "/rm.json", encoding: .utf8)
            .replacingOccurrences(of: "\"epochs\": 3", with: "\"epochs\": 4, \"dpo_beta\": 0.5")
            .write(toFile: dir + "/dpo.json", atomically: true, encoding: .utf8)
        func losses(_ path: String) throws -> [Double] {
            try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").compactMap {
                (try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["loss"] as? Double
            }
        }
        let one = try run([
            tool, "dpo", "--config", dir + "/dpo.json", "--out", dir + "/dpo1", "--metrics", dir + "/dpo1.jsonl",
        ])
        try #require(one.status == 0, "\(one.stderr)")
        let first = try losses(dir + "/dpo1.jsonl")
        #expect(abs(first[0] - log(2.0)) < 1e-5, "the first loss is ln 2: \(first)")
        #expect(first.last! < first[0] - 0.05, "DPO lowers its loss: \(first)")
        let json = try #require(one.stdout.split(separator: "\n").last { $0.contains("eval_accuracy") })
        let accuracy =
            (try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any])["eval_accuracy"] as! Double
        #expect(accuracy >= 0.7, "held-out accuracy of the implicit reward \(accuracy) (chance is 0.5)")
        #expect(one.stdout.contains("margin r_c−r_r") && one.stdout.contains("saved the DPO policy"))

        let two = try run(
            mpirun2 + [
                tool, "dpo", "--config", dir + "/dpo.json", "--out", dir + "/dpo2", "--metrics", dir + "/dpo2.jsonl",
            ])
        try #require(two.status == 0, "\(two.stderr)")
        let second = try losses(dir + "/dpo2.jsonl")
        #expect(
            second.count == first.count && zip(first, second).allSatisfy { abs($0 - $1) < 1e-4 },
            "2 ranks: \(second) against 1: \(first)")

        let stopped = try run(
            mpirun2 + [
                tool, "dpo", "--config", dir + "/dpo.json", "--checkpoint-dir", dir + "/ck-dpo", "--stop-after", "2",
            ])
        #expect(stopped.status == 75, "\(stopped.stderr)")
        let reference = dir + "/ck-dpo/dpo-reference-logprobs.bin"
        #expect(FileManager.default.fileExists(atPath: reference))
        let kept = try Data(contentsOf: URL(fileURLWithPath: reference))
        try FileManager.default.removeItem(atPath: reference)
        let refused = try run(
            mpirun2 + [tool, "dpo", "--config", dir + "/dpo.json", "--checkpoint-dir", dir + "/ck-dpo"])
        #expect(
            refused.status == 1 && refused.stderr.contains(reference) && refused.stderr.contains("--resume none"),
            "\(refused.stderr)")
        try kept.write(to: URL(fileURLWithPath: reference))
        let resumed = try run(
            mpirun2 + [
                tool, "dpo", "--config", dir + "/dpo.json", "--checkpoint-dir", dir + "/ck-dpo", "--out", dir + "/dpo3",
            ])
        #expect(resumed.status == 0 && resumed.stdout.contains("resumed from"), "\(resumed.stderr)")
        #expect(
            FileManager.default.contents(atPath: dir + "/dpo2/model.safetensors")
                == FileManager.default.contents(atPath: dir + "/dpo3/model.safetensors"),
            "the resumed run ends where the whole one does")
    }

    /// Rejection sampling from the SFT model, judged by the reward model: the best of K per prompt, the same
    /// file on 1 and 2 ranks, --previous keeps an earlier answer that judges better, the safety gate hands
    /// samples to the safety model below its threshold, and the result trains with `sft`.
    @Test func rejectionSamplingKeepsTheBestOnAnyRankCount() throws {
        let tool = try toolPath()
        let dir = try fineTuneWorkspace()
        let sft = try run([tool, "sft", "--config", dir + "/sft-hf.json", "--out", dir + "/sft", "--steps", "2"])
        #expect(sft.status == 0, "\(sft.stderr)")
        let rm = try run([tool, "reward", "--config", dir + "/rm.json", "--out", dir + "/rm", "--log-every", "100"])
        try #require(rm.status == 0, "\(rm.stderr)")
        let animals = ["cat", "dog", "bird", "fish", "horse"]
        try
            (animals.map { "{\"prompt\": \"Tell me about the \($0).\"}" } + [
                #"{"messages": [{"role": "user", "content": "Tell me about the cow."}], "safety": true}"#
            ])
            .joined(separator: "\n").write(toFile: dir + "/prompts.jsonl", atomically: true, encoding: .utf8)
        try """
        {"rejection_sampling": {"policy": "\(dir)/sft", "reward_model": "\(dir)/rm", "prompts": "\(dir)/prompts.jsonl",
          "out": "\(dir)/rs1.jsonl", "samples": 4, "max_tokens": 12, "batch": 3}}
        """.write(toFile: dir + "/rs.json", atomically: true, encoding: .utf8)
        let one = try run([tool, "rejection-sample", "--config", dir + "/rs.json"])
        try #require(one.status == 0, "\(one.stderr)")
        #expect(one.stdout.contains("best of N") && FileManager.default.fileExists(atPath: dir + "/rs1.best-of-n.svg"))
        let two = try run(
            mpirun2 + [tool, "rejection-sample", "--config", dir + "/rs.json", "--out", dir + "/rs2.jsonl"])
        try #require(two.status == 0, "\(two.stderr)")
        let first = try Data(contentsOf: URL(fileURLWithPath: dir + "/rs1.jsonl"))
        #expect(first == (try Data(contentsOf: URL(fileURLWithPath: dir + "/rs2.jsonl"))), "1 and 2 ranks differ")
        func lines(_ name: String) throws -> [[String: Any]] {
            try String(contentsOfFile: dir + "/" + name, encoding: .utf8).split(separator: "\n").map {
                try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
            }
        }
        let best = try lines("rs1.jsonl")
        #expect(best.count == 6 && best.map { $0["prompt_index"] as! Int } == Array(0..<6))
        for line in best {
            let scores = line["sample_scores"] as! [Double], score = line["score"] as! Double
            #expect(
                scores.count == 4 && score == scores.max()!
                    && scores.firstIndex(of: score) == line["sample_index"] as? Int)
            let messages = line["messages"] as! [[String: String]]
            #expect(messages.count == 2 && messages[1]["role"] == "assistant")
        }
        #expect(best[5]["safety"] as? Bool == true)

        // Another iteration with another seed, over the first's answers too: never worse per prompt.
        let again = try run([
            tool, "rejection-sample", "--config", dir + "/rs.json", "--seed", "2", "--out", dir + "/rs3.jsonl",
            "--previous", dir + "/rs1.jsonl",
        ])
        try #require(again.status == 0, "\(again.stderr)")
        let later = try lines("rs3.jsonl")
        for (a, b) in zip(best, later) { #expect((b["score"] as! Double) >= (a["score"] as! Double)) }
        for b in later { #expect((b["score"] as! Double) >= (b["sample_scores"] as! [Double]).max()!) }
        #expect(
            later.contains { $0["source"] as? String == dir + "/rs1.jsonl" }
                || zip(best, later).allSatisfy { ($1["score"] as! Double) > ($0["score"] as! Double) },
            "an earlier answer is kept wherever it judges at least as well")

        // The gate: with the reward model as the safety model and a threshold of 1, safety judges every sample.
        try String(contentsOfFile: dir + "/rs.json", encoding: .utf8)
            .replacingOccurrences(
                of: "\"samples\": 4",
                with: "\"samples\": 2, \"safety_reward_model\": \"\(dir)/rm\", \"safety_threshold\": 1"
            )
            .write(toFile: dir + "/rs-safety.json", atomically: true, encoding: .utf8)
        let gated = try run([
            tool, "rejection-sample", "--config", dir + "/rs-safety.json", "--out", dir + "/rs4.jsonl",
        ])
        try #require(gated.status == 0, "\(gated.stderr)")
        #expect(try lines("rs4.jsonl").allSatisfy { $0["judge"] as? String == "safety" })

        // The result is SFT data.
        try String(contentsOfFile: dir + "/sft-hf.json", encoding: .utf8)
            .replacingOccurrences(of: "\(dir)/sft.jsonl", with: "\(dir)/rs1.jsonl")
            .replacingOccurrences(of: "\(dir)/pre\"", with: "\(dir)/sft\"")
            .write(toFile: dir + "/sft-rs.json", atomically: true, encoding: .utf8)
        let retrain = try run([tool, "sft", "--config", dir + "/sft-rs.json", "--steps", "1"])
        #expect(retrain.status == 0 && retrain.stdout.contains("6 dialogues"), "\(retrain.stdout)\(retrain.stderr)")
    }

    /// An SFT policy, a reward model, 12 training and 4 held-out prompts, and `ppo.json`: two iterations of 8.
    private func ppoWorkspace() throws -> (tool: String, dir: String) {
        let tool = try toolPath()
        let dir = try fineTuneWorkspace()
        let sft = try run([tool, "sft", "--config", dir + "/sft-hf.json", "--out", dir + "/sft", "--steps", "2"])
        #expect(sft.status == 0, "\(sft.stderr)")
        let rm = try run([tool, "reward", "--config", dir + "/rm.json", "--out", dir + "/rm", "--steps", "2"])
        #expect(rm.status == 0, "\(rm.stderr)")
        let prompts = try String(contentsOfFile: dir + "/sft.jsonl", encoding: .utf8).split(separator: "\n").prefix(16)
            .map { line -> String in
                let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
                return String(
                    decoding: try JSONSerialization.data(withJSONObject: ["prompt": o["prompt"]!]), as: UTF8.self)
            }
        try (prompts.prefix(12).joined(separator: "\n") + "\n").write(
            toFile: dir + "/prompts.jsonl", atomically: true, encoding: .utf8)
        try (prompts.suffix(4).joined(separator: "\n") + "\n").write(
            toFile: dir + "/held-out.jsonl", atomically: true, encoding: .utf8)
        let model =
            #""model": {"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 400, "ffn_hidden_size": 64, "max_seq_len": 32}"#
        try """
        {\(model), "train": {"seq_len": 32, "micro_batch": 2, "lr": 1e-3, "tokenizer": "\(dir)/tok.model"},
         "finetune": {"data": "\(dir)/prompts.jsonl", "eval_data": "\(dir)/held-out.jsonl", "init_from": "\(dir)/sft"},
         "ppo": {"reward_model": "\(dir)/rm", "batch_size": 8, "mini_batch_size": 4, "iterations": 2, "max_tokens": 6, "kl_coef": 0.05}}
        """.write(toFile: dir + "/ppo.json", atomically: true, encoding: .utf8)
        return (tool, dir)
    }

    /// PPO from the SFT model, judged by the reward model: each iteration samples, scores and updates both
    /// models, and 1 and 2 ranks train the same policy (rollouts spread over the ranks by position, sampling
    /// streams seeded per position).
    @Test func ppoTrainsTheSamePolicyOnOneAndTwoRanks() throws {
        let (tool, dir) = try ppoWorkspace()
        var outputs: [[Float]] = []
        for ranks in [1, 2] {
            let r = try run(
                mpirunFast + [
                    "-np", "\(ranks)", tool, "ppo", "--config", dir + "/ppo.json", "--out", "\(dir)/ppo-\(ranks)",
                ])
            #expect(r.status == 0, "\(ranks) rank(s): \(r.stderr)")
            #expect(r.stdout.contains("ppo iteration 2/2 | reward"), "\(r.stdout)")
            #expect(r.stdout.contains("v_head.summary.weight from its score.weight"), "\(r.stdout)")
            for line in [
                "ppo iteration 2 updates | clip fraction", "ppo held-out after 0 iteration(s)",
                "ppo held-out after 2 iteration(s)",
            ] {
                #expect(r.stdout.contains(line), "\(line)")
            }
            let svg = try String(contentsOfFile: "\(dir)/ppo-\(ranks)/ppo.svg", encoding: .utf8)
            #expect(
                svg.hasPrefix("<svg") && svg.components(separatedBy: "<circle").count == 5,
                "2 held-out points per panel")
            #expect(
                try String(contentsOfFile: "\(dir)/ppo-\(ranks)/ppo-iterations.jsonl", encoding: .utf8).split(
                    separator: "\n"
                ).count == 4)
            outputs.append(try parameters("\(dir)/ppo-\(ranks)/model.safetensors"))
        }
        let start = try parameters(dir + "/sft/model.safetensors")
        #expect(maxDifference(outputs[0], start) > 1e-4, "the policy moved")
        #expect(maxDifference(outputs[0], outputs[1]) <= 1e-5, "1 and 2 ranks train the same policy")
        // Stopped after step 3, part-way through iteration 2, and resumed: it finishes on the rollouts it kept,
        // bitwise where the whole run ends.
        let args = [tool, "ppo", "--config", dir + "/ppo.json", "--checkpoint-dir", dir + "/ck-ppo"]
        let stopped = try run(args + ["--stop-after", "3", "--checkpoint-every", "1"])
        #expect(stopped.status == 75, "\(stopped.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir + "/ck-ppo/ppo-rollouts-000001-rank00000.json"))
        let resumed = try run(args + ["--out", dir + "/ppo-resumed"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(
            FileManager.default.contents(atPath: dir + "/ppo-resumed/model.safetensors")
                == FileManager.default.contents(atPath: dir + "/ppo-1/model.safetensors"), "resumed bitwise")
    }

    /// Under train.sharding gradients and full (both ways of sampling) two ranks train the policy that
    /// replicated training does; gathered and sharded sampling read the same weights through the same
    /// kernels, so they give the same bits.
    @Test func ppoShardedTrainsTheSamePolicy() throws {
        let (tool, dir) = try ppoWorkspace()
        // 3 held-out prompts: one rank evaluates two, the other one (and, sharded, one more left uncounted).
        let heldOut = try String(contentsOfFile: dir + "/held-out.jsonl", encoding: .utf8).split(separator: "\n")
        try (heldOut.prefix(3).joined(separator: "\n") + "\n").write(
            toFile: dir + "/held-out-3.jsonl", atomically: true, encoding: .utf8)
        let config = try String(contentsOfFile: dir + "/ppo.json", encoding: .utf8)
            .replacingOccurrences(of: "held-out.jsonl", with: "held-out-3.jsonl")
        try config.write(toFile: dir + "/ppo-3.json", atomically: true, encoding: .utf8)
        try config.replacingOccurrences(
            of: #""kl_coef": 0.05"#, with: #""kl_coef": 0.05, "generation_weights": "sharded""#
        )
        .write(toFile: dir + "/ppo-sharded.json", atomically: true, encoding: .utf8)
        var outputs: [String: [Float]] = [:]
        var heldOutLines: [String: String] = [:]
        let sampling = [
            "none": "whole on every rank", "optimizer": "whole on every rank", "gradients": "whole on every rank",
            "gathered": "gathered whole for each sampling", "sharded": "through per-unit gathers",
        ]
        for (name, file, sharding) in [
            ("none", "ppo-3.json", "none"), ("optimizer", "ppo-3.json", "optimizer"),
            ("gradients", "ppo-3.json", "gradients"), ("gathered", "ppo-3.json", "full"),
            ("sharded", "ppo-sharded.json", "full"),
        ] {
            let r = try run(
                mpirunFast + [
                    "-np", "2", tool, "ppo", "--config", "\(dir)/\(file)", "--sharding", sharding, "--out",
                    "\(dir)/ppo-\(name)",
                ])
            #expect(r.status == 0, "\(name): \(r.stderr)")
            #expect(r.stdout.contains("ppo held-out after 2 iteration(s)"), "\(name): \(r.stdout)")
            #expect(r.stdout.contains("ppo samples from the policy \(sampling[name]!)"), "\(name): \(r.stdout)")
            heldOutLines[name] = r.stdout.split(separator: "\n").last { $0.hasPrefix("ppo held-out after 2") }
                .map(String.init)
            outputs[name] = try parameters("\(dir)/ppo-\(name)/model.safetensors")
        }
        // The evaluation's 3 prompts, the padded one left out: the same numbers gathered or sharded.
        #expect(heldOutLines["gathered"] != nil && heldOutLines["gathered"] == heldOutLines["sharded"])
        #expect(heldOutLines["gathered"]?.contains("(3 prompts)") == true)
        #expect(maxDifference(outputs["none"]!, try parameters(dir + "/sft/model.safetensors")) > 1e-4, "it trained")
        for name in ["optimizer", "gradients", "gathered", "sharded"] {
            #expect(maxDifference(outputs["none"]!, outputs[name]!) <= 1e-5, "\(name) trains what replicated does")
        }
        #expect(outputs["gathered"]! == outputs["sharded"]!, "the same samples either way")
    }

    /// `plan` on a PPO config at the paper's largest shape counts its five models, each sharded as the config
    /// says, the judges it cannot read taken at the policy's shape; the frozen ones hold no optimizer state.
    @Test func planCountsPPOsFiveModels() throws {
        let dir = try scratch()
        try """
        {"model": {"dim": 8192, "n_layers": 80, "n_heads": 64, "n_kv_heads": 8, "vocab_size": 32000, "ffn_hidden_size": 28672, "max_seq_len": 4096},
         "train": {"seq_len": 4096, "micro_batch": 1, "sharding": "full", "recompute": "layer", "lr": 1e-6, "tokenizer": "tok.model"},
         "finetune": {"data": "prompts.jsonl", "init_from": "rs-v4"},
         "ppo": {"reward_model": "rm-70b", "safety_reward_model": "safety-70b", "kl_coef": 0.005}}
        """.write(toFile: dir + "/ppo-70b.json", atomically: true, encoding: .utf8)
        let r = try run([try toolPath(), "plan", "--config", dir + "/ppo-70b.json", "--ranks", "1024"])
        #expect(r.status == 0, "\(r.stderr)")
        let line = try #require(r.stdout.split(separator: "\n").first { $0.hasPrefix("ppo models") })
        func gib(_ name: String) -> Double? {
            guard let range = line.range(of: name + " ") else { return nil }
            return Double(line[range.upperBound...].prefix { $0 != " " })
        }
        let (policy, value, reference, reward, safety) = (
            gib("policy"), gib("value"), gib("reference"), gib("reward"), gib("safety_reward")
        )
        #expect([policy, value, reference, reward, safety].allSatisfy { $0 != nil }, "\(line)")
        // 70B's fp32 parameters are 257 GiB: sharded over 1024 ranks each model holds a quarter GiB of them.
        #expect(reference! < 20 && reward! < 20 && policy! > reference!, "\(line)")
        // Sampling: gathered, the whole policy's 257 GiB and its packing on every rank; sharded, one layer's.
        let sampling = try #require(r.stdout.split(separator: "\n").first { $0.hasPrefix("ppo sampling") })
        func after(_ word: String) -> Double? {
            sampling.range(of: word + " ").flatMap { Double(sampling[$0.upperBound...].prefix { $0 != " " }) }
        }
        let (gathered, sharded) = (after("gathered (chosen)"), after("sharded"))
        #expect(gathered.map { $0 > 500 } == true && sharded.map { $0 < 10 } == true, "\(sampling)")
    }

    @Test func badLinesAreNamed() throws {
        let tool = try toolPath()
        let dir = try fineTuneWorkspace()
        try "{\"prompt\": \"a\", \"response\": \"b\"}\nnot json\n{\"prompt\": 3}\n".write(
            toFile: dir + "/mixed.jsonl", atomically: true, encoding: .utf8)
        let config = try String(contentsOfFile: dir + "/sft-hf.json", encoding: .utf8)
        try config.replacingOccurrences(of: dir + "/sft.jsonl", with: dir + "/mixed.jsonl").write(
            toFile: dir + "/mixed.json", atomically: true, encoding: .utf8)
        let mixed = try run([tool, "sft", "--config", dir + "/mixed.json", "--steps", "1"])
        #expect(
            mixed.stdout.contains("mixed.jsonl:2") && mixed.stdout.contains("mixed.jsonl:3"),
            "\(mixed.stdout)\(mixed.stderr)")
        // Read across 3 ranks (each its third of the bytes), the same lines are named by their numbers in the file.
        let spread = try run(
            mpirunFast + [
                "-np", "3", tool, "sft", "--config", dir + "/mixed.json", "--steps", "1", "--global-batch-tokens",
                "192",
            ])
        let named = { (out: String) in out.split(separator: "\n").filter { $0.contains("line skipped") } }
        #expect(
            named(spread.stdout) == named(mixed.stdout) && named(mixed.stdout).count == 2,
            "\(spread.stdout)\(spread.stderr)")
        try "nothing here\n".write(toFile: dir + "/mixed.jsonl", atomically: true, encoding: .utf8)
        let none = try run([tool, "sft", "--config", dir + "/mixed.json"])
        #expect(
            none.status == 1 && none.stderr.contains("mixed.jsonl: no line is a usable SFT example"), "\(none.stderr)")
        try "{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\", \"rating\": \"way better\"}\n".write(
            toFile: dir + "/prefs.jsonl", atomically: true, encoding: .utf8)
        let rating = try run([tool, "reward", "--config", dir + "/rm.json"])
        #expect(
            rating.status == 1 && rating.stdout.contains("prefs.jsonl:1: unknown rating 'way better'")
                && rating.stderr.contains("no line is a usable preference pair"),
            "\(rating.stdout)\(rating.stderr)")
    }
}

/// Every tensor of a Hugging Face directory, float32 (model.safetensors, or every shard); and how many
/// weight files it has.
func directoryTensors(_ dir: String) throws -> (tensors: [String: [Float]], files: Int) {
    let names = try FileManager.default.contentsOfDirectory(atPath: dir).filter {
        $0.hasPrefix("model") && $0.hasSuffix(".safetensors")
    }
    var all: [String: [Float]] = [:]
    for name in names { all.merge(try tensors(dir + "/" + name)) { a, _ in a } }
    return (all, names.count)
}

@Suite(.serialized) struct ShardedModelIOTests {
    /// Every rank writes its part of --out into files rank 0 lays out, so ranks launched with another
    /// --out-dtype are refused at start-up, naming the flag, and nothing is written.
    @Test func ranksMustAgreeOnTheOutputFormat() throws {
        let tool = try toolPath()
        let dir = try scratch()
        let config = try writeCheckpointConfig(dir, steps: 1)
        let r = try run(
            mpirunFast + [
                "-np", "1", tool, "pretrain", "--config", config, "--out", dir + "/o", "--out-dtype", "bf16", ":",
                "-np", "1", tool, "pretrain", "--config", config, "--out", dir + "/o", "--out-dtype", "fp32",
            ])
        #expect(r.status != 0 && (r.stdout + r.stderr).contains("--out-dtype: rank 0 has"), "\(r.stdout)\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/o/config.json"))
    }

    /// init_from read by every rank for what it holds, and --out written by every rank for what it owns:
    /// from a sharded Hugging Face directory (written by `export` on 2 ranks) and from a checkpoint, on 1, 2
    /// and 3 ranks in every mode, the starting model comes out tensor for tensor, bit for bit. (lr 1e-30:
    /// AdamW's step is far below a float's resolution of these weights, so the model does not move.)
    @Test func initFromAndOutEqualTheSourceInEveryModeAndWorldSize() throws {
        let tool = try toolPath()
        let dir = try fineTuneWorkspace()
        let source = try directoryTensors(dir + "/pre")
        try #require(source.files == 1 && source.tensors.count == 2 * 9 + 3)
        let small = "30kB"  // files, so this 100 kB-per-tensor-set model spans several
        let export = try run(
            mpirun2 + [
                tool, "export", "--checkpoint", dir + "/ck/step-00000004", "--out", dir + "/pre-sharded", "--dtype",
                "fp32", "--max-shard-size", small,
            ])
        try #require(export.status == 0, "\(export.stderr)")
        let sharded = try directoryTensors(dir + "/pre-sharded")
        #expect(sharded.files >= 3 && sharded.tensors == source.tensors, "export on 2 ranks, \(sharded.files) files")
        #expect(FileManager.default.fileExists(atPath: dir + "/pre-sharded/model.safetensors.index.json"))
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: dir + "/pre-sharded").allSatisfy {
                !$0.contains(".partial-")
            },
            "no staging directory is left behind")

        for (start, label) in [(dir + "/pre-sharded", "sharded HF"), (dir + "/ck/step-00000004", "checkpoint")] {
            let config = dir + "/io.json"
            try """
            {"model": {"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 400, "ffn_hidden_size": 64, "max_seq_len": 32},
             "train": {"seq_len": 32, "micro_batch": 2, "global_batch_tokens": 384, "lr": 1e-30, "warmup_steps": 1, "tokenizer": "\(dir)/tok.model"},
             "finetune": {"data": "\(dir)/sft.jsonl", "init_from": "\(start)", "epochs": 1}}
            """.write(toFile: config, atomically: true, encoding: .utf8)
            for (ranks, mode) in [
                (1, "none"), (2, "full"), (3, "full"), (3, "gradients"), (2, "optimizer"), (3, "none"),
            ] {
                let out = "\(dir)/io-\(ranks)-\(mode)"
                let r = try run(
                    mpirunFast + [
                        "-np", "\(ranks)", tool, "sft", "--config", config, "--steps", "1", "--sharding", mode,
                        "--out", out, "--max-shard-size", small,
                    ])
                try #require(r.status == 0, "\(label), \(mode) on \(ranks): \(r.stderr)")
                let written = try directoryTensors(out)
                #expect(written.files >= 3, "\(label), \(mode) on \(ranks): --out in \(written.files) files")
                let differing = source.tensors.keys.filter { written.tensors[$0] != source.tensors[$0] }.sorted()
                #expect(differing.isEmpty, "\(label), \(mode) on \(ranks) ranks: \(differing) differ from the source")
            }
        }
    }
}
