// The tokenizer files an export writes beside tokenizer.model, against transformers 5.24
// (scripts/make-hf-tokenizer-fixture.sh recorded what it computed from them):
// - AutoTokenizer gives our ids, <s> first, as Llama 2's repositories do, for every case of cases.jsonl but two
//   kinds that are transformers' own: its Metaspace adds no dummy prefix to text that already starts with a
//   space or "▁" (sentencepiece does), and it reads "<s>" written in text as the control token;
// - apply_chat_template with the llama2-chat template we write builds exactly the ids of ChatTemplate (what
//   `llama-train format` prints and SFT trains on).
import Configuration
import FineTune
import Foundation
import Support
import Testing
import Tokenizer

@Suite struct HFTokenizerFilesTests {
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
        "Fixtures/hf-tokenizer"
    ).path

    static let tokenizerPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(
            "../shared/fixtures/spm-bpe/tokenizer.model"
        ).standardizedFileURL.path

    /// Dialogues for apply_chat_template: a system prompt, several turns, content with spaces around it.
    static let dialogues = [
        #"{"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]}"#,
        #"{"messages": [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}, {"role": "user", "content": "  And 3+3?\n"}, {"role": "assistant", "content": " 6 "}]}"#,
        #"{"messages": [{"role": "user", "content": "naïve café 日本語"}, {"role": "assistant", "content": "Tab\there, newline\nthere."}, {"role": "user", "content": "ok"}]}"#,
    ]

    struct Recorded: Decodable {
        struct Case: Decodable {
            let text: String
            let ids: [Int32]
        }
        struct Chat: Decodable {
            let dialogue: String
            let ids: [Int32]
        }
        let cases: [Case]
        let chats: [Chat]
    }

    @Test func autoTokenizerOnOurFilesGivesOurIds() throws {
        let tokenizer = try Tokenizer(path: Self.tokenizerPath)
        let files = try tokenizer.huggingFaceFiles(
            maxLength: 4096, chatTemplate: ChatTemplateKind.llama2Chat.huggingFaceJinja)
        if let out = ProcessInfo.processInfo.environment["WRITE_HF_TOKENIZER_FILES"] {
            for file in files { try file.bytes.write(to: URL(fileURLWithPath: out + "/" + file.name)) }
            try (Self.dialogues.joined(separator: "\n") + "\n").write(
                toFile: out + "/dialogues.jsonl", atomically: true, encoding: .utf8)
            return
        }
        for file in files {
            #expect(
                FileManager.default.contents(atPath: Self.fixture + "/" + file.name) == file.bytes,
                "\(file.name) differs from the one transformers read; rerun scripts/make-hf-tokenizer-fixture.sh")
        }
        let config =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: Self.fixture + "/tokenizer_config.json"))) as? [String: Any]
        #expect(config?["add_bos_token"] as? Bool == true && config?["add_eos_token"] as? Bool == false)
        let recorded = try JSONDecoder().decode(
            Recorded.self, from: Data(contentsOf: URL(fileURLWithPath: Self.fixture + "/autotokenizer.json")))
        var compared = 0
        for c in recorded.cases {
            let leading = c.text.first.map { $0 == " " || $0 == "▁" } ?? false
            if leading || c.text.contains("<s>") || c.text.contains("</s>") { continue }
            compared += 1
            #expect(tokenizer.encode(c.text, bos: true) == c.ids, "\(c.text.debugDescription)")
        }
        #expect(compared >= 20 && compared * 10 >= recorded.cases.count * 8, "\(compared) of \(recorded.cases.count)")
        // The chat template: transformers' ids equal ours for every dialogue.
        let template = try ChatTemplate(.llama2Chat, tokenizer: tokenizer)
        #expect(recorded.chats.map(\.dialogue) == Self.dialogues)
        for chat in recorded.chats {
            let object = try #require(JSONLines.object(chat.dialogue))
            let format = try #require(DialogueData.format(of: object))
            guard case let .dialogue(dialogue) = try DialogueData.example(object, format) else {
                Issue.record("not a dialogue: \(chat.dialogue)")
                continue
            }
            #expect(template.encode(dialogue).tokens == chat.ids, "\(chat.dialogue)")
        }
    }
}
