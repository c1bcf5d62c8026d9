// The chat formats as a user meets them: `format` output against ids built independently with the
// sentencepiece library for both templates, SFT on multi-turn messages data with 2 ranks equal to 1, `data
// stats` on a preference file, and `generate --template`.
import Foundation
import TestSupport
import Testing

@Suite(.serialized) struct ChatFormatTests {
    /// The library builds each template from its definition; `llama-train format` must give the same ids.
    @Test func formatMatchesTheSentencepieceLibrary() throws {
        let tool = try toolPath()
        let dir = try fineTuneWorkspace()
        let tokenizer = dir + "/tok.model"
        let lines =
            try String(contentsOfFile: dir + "/chat.jsonl", encoding: .utf8).split(separator: "\n").prefix(5)
            + [#"{"prompt": "  What is the capital?  ", "response": "Paris. "}"#]
        let input = lines.joined(separator: "\n") + "\n"
        let reference = """
            import json, sys
            import sentencepiece as spm
            sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
            template = sys.argv[2]
            for line in sys.stdin:
                o = json.loads(line)
                turns = o.get("messages") or [{"role": "user", "content": o["prompt"]}, {"role": "assistant", "content": o["response"]}]
                system = turns[0]["content"] if turns[0]["role"] == "system" else None
                turns = [t for t in turns if t["role"] != "system"]
                ids, mask = [], []
                for i, t in enumerate(turns):
                    if t["role"] == "user":
                        if template == "llama2-chat":
                            user = t["content"].strip()
                            if i == 0 and system is not None:
                                user = "<<SYS>>\\n" + system.strip() + "\\n<</SYS>>\\n\\n" + user
                            piece = [sp.bos_id()] + sp.encode("[INST] " + user + " [/INST]")
                        else:
                            user = (system + "\\n\\n" + t["content"]) if (i == 0 and system is not None) else t["content"]
                            piece = [sp.bos_id()] + sp.encode(user) + [sp.piece_to_id("<sep>")]
                        ids += piece; mask += [0] * len(piece)
                    else:
                        text = t["content"].strip() if template == "llama2-chat" else t["content"]
                        piece = sp.encode(text) + [sp.eos_id()]
                        ids += piece; mask += [1] * len(piece)
                print(json.dumps({"ids": ids, "mask": mask}))
            """
        try reference.write(toFile: dir + "/reference.py", atomically: true, encoding: .utf8)
        for template in ["llama2-chat", "separator"] {
            let ours = try run([tool, "format", "--tokenizer", tokenizer, "--template", template], stdin: input)
            #expect(ours.status == 0, "\(ours.stderr)")
            let theirs = try run(["python3", dir + "/reference.py", tokenizer, template], stdin: input)
            try #require(theirs.status == 0, "\(theirs.stderr)")
            let a = ours.stdout.split(separator: "\n").map {
                try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
            }
            let b = theirs.stdout.split(separator: "\n").map {
                try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
            }
            #expect(a.count == lines.count && a.count == b.count)
            for (x, y) in zip(a, b) {
                #expect(x["ids"] as? [Int] == y["ids"] as? [Int], "\(template): ids differ\n\(x)\n\(y)")
                #expect(x["mask"] as? [Int] == y["mask"] as? [Int], "\(template): masks differ")
            }
        }
    }

    /// SFT on messages data with the llama2-chat template: 2 ranks train what 1 rank trains; then the model
    /// answers a single user turn; and `data stats` describes the preference file.
    @Test func chatSFTOnTwoRanksEqualsOneAndAnswers() throws {
        let tool = try toolPath()
        let dir = try fineTuneWorkspace()
        try """
        {"model": {"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 400, "ffn_hidden_size": 64, "max_seq_len": 32},
         "train": {"seq_len": 32, "micro_batch": 2, "global_batch_tokens": 256, "lr": 1e-3, "warmup_steps": 1, "tokenizer": "\(dir)/tok.model"},
         "finetune": {"data": "\(dir)/chat.jsonl", "init_from": "\(dir)/pre", "epochs": 1, "template": "llama2-chat"}}
        """.write(toFile: dir + "/chat.json", atomically: true, encoding: .utf8)
        let one = try run([tool, "sft", "--config", dir + "/chat.json", "--steps", "3", "--out", dir + "/chat-1"])
        #expect(
            one.status == 0 && one.stdout.contains("messages format") && one.stdout.contains("llama2-chat template"),
            "\(one.stdout)\(one.stderr)")
        let two = try run(
            mpirunFast + [
                "-np", "2", tool, "sft", "--config", dir + "/chat.json", "--steps", "3", "--out", dir + "/chat-2",
            ])
        #expect(two.status == 0, "\(two.stderr)")
        let a = try parameters(dir + "/chat-1/model.safetensors"), b = try parameters(dir + "/chat-2/model.safetensors")
        #expect(!a.isEmpty && maxDifference(a, b) <= 1e-5)
        let answer = try run([
            tool, "generate", "--checkpoint", dir + "/chat-1", "--template", "llama2-chat", "--prompt",
            "Repeat the word river.",
            "--max-tokens", "8", "--temperature", "0",
        ])
        #expect(
            answer.status == 0 && answer.stdout.contains("[user] Repeat the word river.")
                && answer.stdout.contains("[assistant]"), "\(answer.stdout)\(answer.stderr)")
        let stats = try run([tool, "data", "stats", "--data", dir + "/prefs.jsonl", "--tokenizer", dir + "/tok.model"])
        #expect(stats.status == 0, "\(stats.stderr)")
        let row =
            try JSONSerialization.jsonObject(with: Data(stats.stdout.split(separator: "\n").last!.utf8))
            as! [String: Any]
        #expect(row["comparisons"] as? Int == 240 && row["avg_turns_per_dialogue"] as? Double == 1, "\(row)")
        let (example, prompt, response) = (
            row["avg_tokens_per_example"] as! Double, row["avg_tokens_in_prompt"] as! Double,
            row["avg_tokens_in_response"] as! Double
        )
        #expect(abs(example - prompt - response) < 1e-9 && prompt > 0 && response > 0)
    }
}
