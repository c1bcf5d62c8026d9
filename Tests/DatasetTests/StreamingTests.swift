// Streaming data: the Feistel bijection, compressed inputs, byte-range parts, long documents in parts, and a
// source of 2.5e9 windows (a sparse shard) read at 64-bit positions.
import Dataset
import Foundation
import Support
import Testing
import Tokenizer

/// Runs a shell pipeline (gzip, zstd) for making test inputs.
func shell(_ command: String) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", command]
    try process.run()
    process.waitUntilExit()
    try #require(process.terminationStatus == 0, "\(command)")
}

/// The documents of `path`, read as `parts` byte-range parts one after another and joined.
func documents(_ path: String, delimiter: String?, parts: Int) throws -> [String] {
    var joined: [String] = []
    for part in 0..<parts {
        let reader = try DocumentReader(
            path: path, options: DocumentOptions(delimiter: delimiter), part: part, of: parts)
        while let d = try reader.next() { joined.append(d.text) }
    }
    return joined
}

let fixtureTokenizerPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(
        "shared/fixtures/spm-bpe/tokenizer.model"
    ).path

@Suite struct FeistelTests {
    @Test(arguments: [1, 2, 3, 5, 16, 17, 1000, 4097])
    func everySmallDomainIsPermutedExhaustively(count: Int) {
        for seed: UInt64 in [0, 1, 0xDEAD_BEEF] {
            let p = FeistelPermutation(count: count, seed: seed)
            let image = (0..<count).map { p[$0] }
            #expect(image.sorted() == Array(0..<count), "count \(count) seed \(seed)")
            #expect((0..<count).allSatisfy { p.inverse(image[$0]) == $0 })
        }
        if count >= 16 {
            #expect(
                (0..<count).map { FeistelPermutation(count: count, seed: 1)[$0] }
                    != (0..<count).map { FeistelPermutation(count: count, seed: 2)[$0] })
        }
    }

    /// On domains too large to enumerate: every sampled image is in range and the inverse walk returns the
    /// index, which makes the map injective, hence a bijection of a finite set onto itself.
    @Test(arguments: [2_500_000_000, 4_294_967_297, (1 << 62) + 3])
    func largeDomainsAreBijectionsOnSamples(count: Int) {
        let p = FeistelPermutation(count: count, seed: 42)
        var rng = SplitMix64(seed: 9)
        var images = Set<Int>()
        for _ in 0..<20_000 {
            let x = Int(rng.next() % UInt64(count))
            let y = p[x]
            #expect(y >= 0 && y < count)
            #expect(p.inverse(y) == x)
            images.insert(y)
        }
        // Spread over the whole range, not clustered at its start.
        #expect(images.filter { $0 >= count / 2 }.count > 9_000)
    }
}

@Suite struct CompressedInputTests {
    static func corpus(_ dir: String) throws -> String {
        let lines = (0..<3000).map {
            #"{"text": "document \#($0): naïve café \#(String(repeating: "x", count: $0 % 97))", "id": \#($0)}"#
        }
        try lines.joined(separator: "\n").write(toFile: dir + "/c.jsonl", atomically: true, encoding: .utf8)
        return dir + "/c.jsonl"
    }

    @Test func gzipAndZstdCopiesGiveTheSameDocuments() throws {
        let dir = try scratchDirectory()
        let plain = try Self.corpus(dir)
        try shell("gzip -c \(plain) > \(plain).gz && zstd -q -c \(plain) > \(plain).zst")
        // Two gzip members and two zstd frames, as `cat` of compressed pieces makes.
        try shell("head -c 50000 \(plain) > \(dir)/a && tail -c +50001 \(plain) > \(dir)/b")
        try shell(
            "(gzip -c \(dir)/a; gzip -c \(dir)/b) > \(dir)/two.jsonl.gz && (zstd -q -c \(dir)/a; zstd -q -c \(dir)/b) > \(dir)/two.jsonl.zst"
        )
        let expected = try Documents.read(plain, delimiter: nil)
        #expect(expected.count == 3000)
        for path in [plain + ".gz", plain + ".zst", dir + "/two.jsonl.gz", dir + "/two.jsonl.zst"] {
            #expect(try Documents.read(path, delimiter: nil) == expected, "\(path)")
        }
        #expect(
            try Compression.of(plain + ".zst") == .zstd && Compression.of(plain + ".gz") == .gzip
                && Compression.of(plain) == .none)
        #expect(InputSpec(argument: plain + ".zst").source == "c")
    }

    @Test func damagedStreamsAreRefusedByName() throws {
        let dir = try scratchDirectory()
        let plain = try Self.corpus(dir)
        try shell("gzip -c \(plain) > \(dir)/c.jsonl.gz && zstd -q -c \(plain) > \(dir)/c.jsonl.zst")
        for ext in ["gz", "zst"] {
            let whole = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/c.jsonl.\(ext)"))
            try whole.prefix(whole.count * 2 / 3).write(to: URL(fileURLWithPath: "\(dir)/cut.jsonl.\(ext)"))
            #expect { try Documents.read("\(dir)/cut.jsonl.\(ext)", delimiter: nil) } throws: {
                "\($0)".contains("\(dir)/cut.jsonl.\(ext)") && "\($0)".contains("truncated")
            }
            var flipped = whole
            for i in stride(from: 40, to: whole.count - 40, by: 97) { flipped[i] ^= 0x5A }
            try flipped.write(to: URL(fileURLWithPath: "\(dir)/bad.jsonl.\(ext)"))
            #expect { try Documents.read("\(dir)/bad.jsonl.\(ext)", delimiter: nil) } throws: {
                "\($0)".contains("\(dir)/bad.jsonl.\(ext)")
                    && ("\($0)".contains("corrupt") || "\($0)".contains(".jsonl.\(ext):"))
            }
        }
    }

    @Test func badLinesAreNamedThenRefusedOrSkipped() throws {
        let dir = try scratchDirectory()
        var bytes = Array(#"{"text": "one"}"#.utf8) + [0x0A] + Array(#"{"body": "two"}"#.utf8) + [0x0A]
        bytes +=
            Array(#"{"text": "th"#.utf8) + [0xFF, 0xFE] + Array(#"ree"}"#.utf8) + [0x0A]
            + Array(#"{"text": "four"}"#.utf8)
        try Data(bytes).write(to: URL(fileURLWithPath: dir + "/d.jsonl"))
        #expect { try Documents.read(dir + "/d.jsonl", delimiter: nil) } throws: {
            "\($0)".contains("d.jsonl:2") && "\($0)".contains("--text-field")
        }
        let skipping = try DocumentReader(path: dir + "/d.jsonl", options: DocumentOptions(skipBadLines: true))
        var texts: [String] = []
        while let part = try skipping.next() { texts.append(part.text) }
        #expect(texts == ["one", "four"] && skipping.badLines == 2)
        #expect(skipping.warnings.count == 2 && skipping.warnings[1].contains("d.jsonl:3: invalid UTF-8 at byte 13"))
        let body = try DocumentReader(
            path: dir + "/d.jsonl", options: DocumentOptions(textField: "body", skipBadLines: true))
        #expect(try body.next()?.text == "two" && body.next() == nil && body.badLines == 3)

        let text = Array("good line\n%\n".utf8) + [0xC3, 0x28] + Array("\nmore\n".utf8)
        try Data(text).write(to: URL(fileURLWithPath: dir + "/t.txt"))
        #expect { try Documents.read(dir + "/t.txt", delimiter: "%") } throws: {
            "\($0)".contains("t.txt:3: invalid UTF-8 at byte 1")
        }
    }
}

@Suite struct ByteRangeTests {
    /// For every number of parts, the parts' documents end to end are the whole input's: JSON Lines and
    /// delimited text, with delimiters first, doubled and last, blank documents, and no final newline.
    @Test func partsCoverEveryDocumentOnceForAnyCount() throws {
        let dir = try scratchDirectory()
        var rng = SplitMix64(seed: 5)
        var text = "%\n"
        for i in 0..<400 {
            text +=
                "doc \(i) " + String(repeating: "w", count: Int(rng.next() % 60)) + (i % 7 == 0 ? "\nsecond line" : "")
            text += i % 13 == 0 ? "\n%\n%\n" : i % 17 == 0 ? "\n%\n   \n%\n" : "\n%\n"
        }
        text += "tail without newline"
        try text.write(toFile: dir + "/f.txt", atomically: true, encoding: .utf8)
        try (0..<500).map { #"{"text": "line \#($0) \#(String(repeating: "y", count: $0 % 41))"}"# }.joined(
            separator: "\n"
        )
        .write(toFile: dir + "/j.jsonl", atomically: true, encoding: .utf8)
        for (path, delimiter) in [(dir + "/f.txt", "%"), (dir + "/j.jsonl", nil)] {
            let whole = try Documents.read(path, delimiter: delimiter)
            for parts in [1, 2, 3, 5, 8, 64] {
                #expect(try documents(path, delimiter: delimiter, parts: parts) == whole, "\(path) in \(parts) parts")
            }
        }
    }

    /// Windows line ends (CRLF), and a mix of CRLF and LF, give the documents of LF, whole and in parts; a
    /// lone CR inside a line is data and stays.
    @Test func crlfAndMixedLineEndsReadAsLF() throws {
        let dir = try scratchDirectory()
        var lines: [String] = []
        for i in 0..<300 {
            lines.append("doc \(i) " + String(repeating: "w", count: i % 37) + (i % 5 == 0 ? " a\rb" : ""))
            if i % 11 == 0 { lines.append("second line") }
            lines.append("%")
        }
        let json = (0..<300).map { #"{"text": "line \#($0)\#(String(repeating: "y", count: $0 % 29))"}"# }
        for (name, body, delimiter) in [("f", lines, "%" as String?), ("j", json, nil)] {
            let lf = dir + "/\(name)-lf", crlf = dir + "/\(name)-crlf", mixed = dir + "/\(name)-mixed"
            let ext = delimiter == nil ? ".jsonl" : ".txt"
            try (body.joined(separator: "\n") + "\n").write(toFile: lf + ext, atomically: true, encoding: .utf8)
            try (body.joined(separator: "\r\n") + "\r\n").write(toFile: crlf + ext, atomically: true, encoding: .utf8)
            let mix = body.enumerated().map { $0.element + ($0.offset % 2 == 0 ? "\r\n" : "\n") }.joined()
            try mix.write(toFile: mixed + ext, atomically: true, encoding: .utf8)
            let expected = try Documents.read(lf + ext, delimiter: delimiter)
            #expect(expected.count == 300 && (delimiter == nil || expected[0].contains("\r")))
            for path in [crlf + ext, mixed + ext] {
                #expect(try Documents.read(path, delimiter: delimiter) == expected, "\(path)")
                for parts in [2, 3, 7] {
                    #expect(
                        try documents(path, delimiter: delimiter, parts: parts) == expected, "\(path) in \(parts) parts"
                    )
                }
            }
        }
    }

    @Test func errorsInALaterRangeNameTheirRealLine() throws {
        let dir = try scratchDirectory()
        var lines = (0..<1000).map { #"{"text": "\#($0)"}"# }
        lines[876] = "oops"
        try lines.joined(separator: "\n").write(toFile: dir + "/j.jsonl", atomically: true, encoding: .utf8)
        #expect {
            let r = try DocumentReader(path: dir + "/j.jsonl", options: DocumentOptions(), part: 1, of: 2)
            while try r.next() != nil {}
        } throws: { "\($0)".contains("j.jsonl:877") }
    }

    @Test func planSplitsLargeFilesAndBalancesWholeOnes() {
        let plan = Preparation.plan(sizes: [1000, 50, 400, 300], splittable: [true, false, false, false], ranks: 2)
        #expect(plan.filter { $0.input == 0 }.map(\.rank) == [0, 1])
        #expect(
            plan.first { $0.input == 2 }!.rank == 0 && plan.first { $0.input == 3 }!.rank == 1
                && plan.first { $0.input == 1 }!.rank == 1)
        #expect(
            Preparation.plan(sizes: [10, 20], splittable: [true, false], ranks: 1).allSatisfy {
                $0.rank == 0 && $0.parts == 1
            })
    }

    /// A long plain-text document read in parts and encoded part by part gives the ids of the whole.
    @Test func longDocumentsEncodedInPartsEqualTheWhole() throws {
        let tokenizer = try Tokenizer(path: fixtureTokenizerPath)
        #expect(tokenizer.encodesPartsAtNewlines)
        let dir = try scratchDirectory()
        let text =
            (0..<300).map { "  line \($0): 3.14 naïve\t" + String(repeating: " the end", count: $0 % 5) }.joined(
                separator: "\n") + "\n\n  "
        try text.write(toFile: dir + "/book.txt", atomically: true, encoding: .utf8)
        var options = DocumentOptions()
        options.partBytes = 200
        let reader = try DocumentReader(path: dir + "/book.txt", options: options)
        var ids: [Int32] = [], parts = 0, texts = ""
        while let part = try reader.next() {
            ids += tokenizer.encodePart(part.text, first: part.first, last: part.last)
            texts += part.text
            parts += 1
        }
        #expect(parts > 20 && texts == text)
        #expect(ids == tokenizer.encode(text, bos: true, eos: true))
    }
}

@Suite struct LargeSourceTests {
    /// 5e9 + 1 tokens at seq_len 2: 2.5e9 windows, token positions past 2^32, in a sparse 10 GB shard.
    @Test func aSourceOfTwoAndAHalfBillionWindowsIsReadAt64BitPositions() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tokens = 5_000_000_001
        let path = try writeSparseSource(dir, tokens: tokens)
        let loader = try MixtureLoader(directory: dir, tokenizerHash: hashA, seqLen: 2, seed: 1, vocabSize: 100)
        #expect(loader.sources[0].windows == 2_500_000_000)
        // A sequence whose window starts past token 2^32: write a marker there and read it back.
        let g = try #require((0..<1000).first { loader.window(ofSequence: $0).window * 2 > 1 << 32 })
        let w = loader.window(ofSequence: g).window
        let fd = open(path, O_WRONLY)
        let marker: [UInt16] = [7, 8, 9]
        _ = marker.withUnsafeBytes { pwrite(fd, $0.baseAddress!, 6, off_t(64 + 2 * w * 2)) }
        close(fd)
        let batch = try MixtureLoader(directory: dir, tokenizerHash: hashA, seqLen: 2, seed: 1, vocabSize: 100).batch(
            g, globalBatch: 1)
        #expect(batch.tokens == [7, 8] && batch.targets == [8, 9])
    }
}

/// A prepared directory with one source "big" of `tokens` zero tokens, as a sparse file.
func writeSparseSource(_ dir: String, tokens: Int, hash: String = hashA, vocab: Int = 100) throws -> String {
    let path = dir + "/big-00000.bin"
    let header = TokenShard.header(count: tokens, documents: 1, width: 2, tokenizerHash: hash)
    FileManager.default.createFile(atPath: path, contents: Data(header))
    try #require(truncate(path, off_t(64 + 2 * tokens)) == 0)
    let index = DatasetIndex(
        tokenizerSHA256: hash, vocabSize: vocab,
        sources: [
            .init(
                name: "big", inputs: ["sparse"],
                shards: [.init(file: "big-00000.bin", tokens: tokens, documents: 1, maxTokenId: 0)])
        ])
    try Preparation.write(index, to: dir)
    return path
}
