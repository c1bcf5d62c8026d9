// Exactness against the sentencepiece library: every case of shared/fixtures/spm-bpe/cases.jsonl (ids,
// pieces and decoded text that SentencePieceProcessor gave for awkward strings).
import Foundation
import Testing
import Tokenizer

func sharedFixture(_ relative: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("../shared/fixtures/" + relative).standardizedFileURL.path
}

struct FixtureCase: Decodable {
    let text: String
    let ids: [Int32]
    let pieces: [String]
    let decoded: String
}

@Suite struct FixtureTests {
    static let tokenizerPath = sharedFixture("spm-bpe/tokenizer.model")

    static func cases() throws -> [FixtureCase] {
        let data = try String(contentsOfFile: sharedFixture("spm-bpe/cases.jsonl"), encoding: .utf8)
        return try data.split(separator: "\n").map { try JSONDecoder().decode(FixtureCase.self, from: Data($0.utf8)) }
    }

    @Test func everyCaseEncodesAndDecodesExactly() throws {
        let tokenizer = try Tokenizer(path: Self.tokenizerPath)
        let cases = try Self.cases()
        #expect(cases.count > 0)
        for c in cases {
            let ids = tokenizer.encode(c.text)
            #expect(ids == c.ids, "encode(\(c.text.debugDescription))")
            #expect(tokenizer.pieces(ids) == c.pieces, "pieces of \(c.text.debugDescription)")
            #expect(try tokenizer.decode(c.ids) == c.decoded, "decode of \(c.text.debugDescription)")
        }
    }

    @Test func modelSettingsAreRead() throws {
        let t = try Tokenizer(path: Self.tokenizerPath)
        #expect(t.vocabSize == 2000)
        #expect(t.model.trainer.byteFallback && t.model.trainer.splitDigits)
        #expect(t.model.normalizer.addDummyPrefix && !t.model.normalizer.removeExtraWhitespaces)
        #expect(t.unkId == 0 && t.bosId == 1 && t.eosId == 2)
        #expect(t.encode("hello", bos: true, eos: true).first == 1 && t.encode("hello", bos: true, eos: true).last == 2)
    }
}

@Suite struct EmptyTokenizerTests {
    @Test func zeroBytesAreNamedAsEmpty() throws {
        let path = NSTemporaryDirectory() + "empty-\(UUID().uuidString).model"
        FileManager.default.createFile(atPath: path, contents: Data())
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect { try Tokenizer(path: path) } throws: { "\($0)".contains("empty (0 bytes)") && "\($0)".contains(path) }
    }
}

@Suite struct DamagedPieceTests {
    /// A piece whose bytes are not UTF-8 (a three-byte sequence cut to two) is refused naming the piece and
    /// the byte, instead of matching and decoding as U+FFFD.
    @Test func aPieceThatIsNotUTF8IsRefused() throws {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: FixtureTests.tokenizerPath))
        var model = try SentencePieceModel(serialized: [UInt8](bytes))
        let id = try #require(model.pieces.firstIndex { $0.kind == .normal && $0.bytes.count >= 3 })
        model.pieces[id].bytes = [UInt8(ascii: "a"), 0xE2, 0x96]
        #expect { try Tokenizer(model: model, source: "damaged.model") } throws: {
            let text = "\($0)"
            return text.contains("damaged.model") && text.contains("piece \(id) is not valid UTF-8 (byte 2 of 3)")
        }
    }
}
