// BPETrainer: learns a SentencePiece BPE model from text, as spm_train --model_type=bpe does, with Llama 2's
// options as defaults (split digits, byte fallback, identity normalisation, dummy prefix, whitespace kept).
//
// Steps (SentencePiece's trainer_interface.cc and bpe_model_trainer.cc):
//  1. Lines become normalised sentences, counted; meta pieces in the text are masked with a tab.
//  2. The alphabet: characters by frequency until character_coverage is reached; the rest become U+2585.
//  3. Sentences split into words at each "▁" that starts a run; each word a sequence of characters.
//  4. Merge loop: the most frequent valid pair (ties: fewer code points, then smaller bytes) becomes a piece
//     with score −(merge index), applied everywhere; exact counts, not SentencePiece's lazy approximation.
//  5. Pieces: meta pieces at their ids, merges, then the alphabet by frequency.

import Foundation

public struct BPETrainerOptions: Sendable {
    public var vocabSize = 32000
    public var characterCoverage: Float = 0.99995
    public var maxSentencepieceLength = 16
    public var maxSentenceLength = 4192
    public var splitDigits = true
    public var byteFallback = true
    public var allowWhitespaceOnlyPieces = true
    public var splitByUnicodeScript = true
    public var addDummyPrefix = true
    public var removeExtraWhitespaces = false
    public var userDefinedSymbols: [String] = []
    public var controlSymbols: [String] = []
    public var unkId = 0, bosId = 1, eosId = 2, padId = -1

    public init() {}
}

public enum BPETrainerError: Error, CustomStringConvertible, Equatable {
    case emptyCorpus
    case vocabularyTooSmall(requested: Int, needed: Int)
    case vocabularyTooLarge(requested: Int, possible: Int)
    case invalidOption(String)

    public var description: String {
        switch self {
        case .emptyCorpus: "the training text has no usable line"
        case let .vocabularyTooSmall(r, n):
            "vocab size \(r) cannot hold the \(n) meta pieces and characters; use at least \(n + 1) or lower --character-coverage"
        case let .vocabularyTooLarge(r, p):
            "this corpus supports at most \(p) pieces, \(r) were requested; lower --vocab-size or add text"
        case let .invalidOption(m): m
        }
    }
}

public enum BPETrainer {
    static let unkChar: UInt32 = 0x2585
    static let wsChar: UInt32 = 0x2581

    /// Trains on `lines` (one sentence each), counted on one thread.
    public static func train(lines: [Substring], options o: BPETrainerOptions) throws -> SentencePieceModel {
        let counter = try SentenceCounter(options: o)
        for line in lines {
            var line = line
            line.withUTF8 { counter.add($0) }
        }
        return try train(counter, options: o)
    }

    /// The meta pieces at their ids: unk, bos, eos, pad, then control, user-defined and byte pieces at the
    /// lowest free ids.
    static func metaPieces(_ o: BPETrainerOptions) throws -> [Int: SentencePiece] {
        var meta: [Int: SentencePiece] = [:]
        for (id, piece, kind) in [
            (o.unkId, "<unk>", SentencePiece.Kind.unknown), (o.bosId, "<s>", .control),
            (o.eosId, "</s>", .control), (o.padId, "<pad>", .control),
        ] where id >= 0 {
            guard meta[id] == nil else { throw BPETrainerError.invalidOption("two special pieces share id \(id)") }
            meta[id] = SentencePiece(piece, score: 0, kind: kind)
        }
        var nextFree = 0
        func addMeta(_ text: String, _ kind: SentencePiece.Kind) {
            while meta[nextFree] != nil { nextFree += 1 }
            meta[nextFree] = SentencePiece(text, score: 0, kind: kind)
        }
        for c in o.controlSymbols { addMeta(c, .control) }
        for u in o.userDefinedSymbols { addMeta(u, .userDefined) }
        if o.byteFallback { for b in 0..<256 { addMeta(String(format: "<0x%02X>", b), .byte) } }
        return meta
    }

    static func normalizer(_ o: BPETrainerOptions) -> NormalizerSpec {
        var normalizer = NormalizerSpec()
        normalizer.name = "identity"
        normalizer.addDummyPrefix = o.addDummyPrefix
        normalizer.removeExtraWhitespaces = o.removeExtraWhitespaces
        return normalizer
    }

    /// Trains on the sentences `counter` has seen.
    public static func train(_ counter: SentenceCounter, options o: BPETrainerOptions) throws -> SentencePieceModel {
        let meta = try metaPieces(o)
        let normalizer = normalizer(o)
        // Each worker's sentence table is read by its own thread, twice: to decode sentences and count
        // characters, then to split words; the parts are summed between and after.
        let parts = counter.tables().map { TrainingPart(sentences: $0) }
        guard parts.contains(where: { !$0.table.isEmpty }) else { throw BPETrainerError.emptyCorpus }

        // 1. Sentences as code points (decoded once per distinct sentence), and 2. characters counted.
        DispatchQueue.concurrentPerform(iterations: parts.count) { parts[$0].decodeAndCountCharacters() }
        var planeCounts = [Int](repeating: 0, count: 0x10000)
        var otherCounts: [UInt32: Int] = [:]
        var total = 0
        for part in parts {
            for c in part.planeCounts.indices where part.planeCounts[c] > 0 { planeCounts[c] += part.planeCounts[c] }
            otherCounts.merge(part.otherCounts, uniquingKeysWith: +)
            total += part.total
        }

        // The alphabet by coverage.
        let charCounts =
            planeCounts.indices.compactMap { planeCounts[$0] > 0 ? (UInt32($0), planeCounts[$0]) : nil }
            + otherCounts.map { ($0.key, $0.value) }
        let byFrequency = charCounts.sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }
        var alphabet: [(UInt32, Int)] = []
        var accumulated = 0
        for (c, n) in byFrequency {
            if Float(Double(accumulated) / Double(total)) >= o.characterCoverage { break }
            accumulated += n
            alphabet.append((c, n))
        }
        var planeKept = [Bool](repeating: false, count: 0x10000)
        var otherKept = Set<UInt32>()
        for (c, _) in alphabet { if c < 0x10000 { planeKept[Int(c)] = true } else { otherKept.insert(c) } }
        let mergesWanted = o.vocabSize - meta.count - alphabet.count
        guard mergesWanted >= 0 else {
            throw BPETrainerError.vocabularyTooSmall(requested: o.vocabSize, needed: meta.count + alphabet.count)
        }

        // 3. Words.
        let (kept, keptOther) = (planeKept, otherKept)
        DispatchQueue.concurrentPerform(iterations: parts.count) {
            parts[$0].countWords(
                planeKept: kept, otherKept: keptOther, allowWhitespaceOnlyPieces: o.allowWhitespaceOnlyPieces)
        }
        var words = parts[0].words
        for part in parts.dropFirst() { words.add(part.words) }

        // 4. Merges.
        // Symbols are the alphabet, U+2585 and the merges: fewer than vocab_size.
        let merges: [[UInt8]]
        if o.vocabSize < Int(UInt16.max) {
            var merger = PairMerger<UInt16>(options: o, threads: counter.threads)
            merges = merger.run(words: words, wanted: mergesWanted)
        } else {
            var merger = PairMerger<UInt32>(options: o, threads: counter.threads)
            merges = merger.run(words: words, wanted: mergesWanted)
        }
        guard merges.count == mergesWanted || !o.hardVocabLimit else {
            throw BPETrainerError.vocabularyTooLarge(
                requested: o.vocabSize, possible: meta.count + alphabet.count + merges.count)
        }

        // 5. The model.
        var ordered: [SentencePiece] = []
        for (i, m) in merges.enumerated() { ordered.append(SentencePiece(bytes: m, score: -Float(i), kind: .normal)) }
        for (c, _) in alphabet {
            ordered.append(SentencePiece(String(Character(Unicode.Scalar(c)!)), score: -Float(ordered.count)))
        }
        var pieces: [SentencePiece] = []
        var next = 0
        for id in 0..<(meta.count + ordered.count) {
            if let m = meta[id] {
                pieces.append(m)
            } else {
                pieces.append(ordered[next])
                next += 1
            }
        }
        var trainer = TrainerSpec()
        trainer.modelType = .bpe
        trainer.vocabSize = pieces.count
        trainer.characterCoverage = o.characterCoverage
        trainer.maxSentenceLength = o.maxSentenceLength
        trainer.maxSentencepieceLength = o.maxSentencepieceLength
        trainer.splitDigits = o.splitDigits
        trainer.byteFallback = o.byteFallback
        trainer.allowWhitespaceOnlyPieces = o.allowWhitespaceOnlyPieces
        trainer.splitByUnicodeScript = o.splitByUnicodeScript
        trainer.controlSymbols = o.controlSymbols
        trainer.userDefinedSymbols = o.userDefinedSymbols
        (trainer.unkId, trainer.bosId, trainer.eosId, trainer.padId) = (o.unkId, o.bosId, o.eosId, o.padId)
        return SentencePieceModel(pieces: pieces, trainer: trainer, normalizer: normalizer)
    }

    /// Replaces each occurrence of a meta piece in the text with a tab, so none is learnt as ordinary text.
    static func mask(_ bytes: [UInt8], pieces: [[UInt8]]) -> [UInt8] {
        guard
            bytes.contains(where: { $0 == UInt8(ascii: "<") })
                || pieces.contains(where: { $0.first != UInt8(ascii: "<") })
        else {
            return bytes
        }
        var out: [UInt8] = []
        var i = 0
        outer: while i < bytes.count {
            for p in pieces where p.count <= bytes.count - i && bytes[i..<(i + p.count)].elementsEqual(p) {
                out.append(0x09)
                i += p.count
                continue outer
            }
            out.append(bytes[i])
            i += 1
        }
        return out
    }
}

/// One worker's share of the training sentences, through decoding, character counts and words.
final class TrainingPart: @unchecked Sendable {
    let table: [ByteKey: Int]
    var sentences: [([UInt32], Int)] = []
    var planeCounts: [Int] = []
    var otherCounts: [UInt32: Int] = [:]
    var total = 0
    var words = WordTable()

    init(sentences table: [ByteKey: Int]) {
        self.table = table
    }

    func decodeAndCountCharacters() {
        sentences = table.map { key, f in (String(decoding: key.bytes, as: UTF8.self).unicodeScalars.map(\.value), f) }
        planeCounts = [Int](repeating: 0, count: 0x10000)
        for (s, f) in sentences {
            for c in s where c != 0 && c != 0x20 {
                if c < 0x10000 { planeCounts[Int(c)] += f } else { otherCounts[c, default: 0] += f }
                total += f
            }
        }
    }

    /// Characters outside the alphabet become U+2585; sentences split into words at each "▁" that starts a
    /// run of them (or at every "▁" when whitespace-only pieces are not allowed).
    func countWords(planeKept: [Bool], otherKept: Set<UInt32>, allowWhitespaceOnlyPieces: Bool) {
        var mapped: [UInt32] = []
        for (s, f) in sentences {
            mapped.removeAll(keepingCapacity: true)
            for c in s {
                mapped.append((c < 0x10000 ? planeKept[Int(c)] : otherKept.contains(c)) ? c : BPETrainer.unkChar)
            }
            mapped.withUnsafeBufferPointer { m in
                let p = m.baseAddress!
                var wordStart = 0
                var inRun = false
                for i in 0..<m.count {
                    let isWS = p[i] == BPETrainer.wsChar
                    if i > 0 && isWS && (!inRun || !allowWhitespaceOnlyPieces) {
                        words.add(p + wordStart, i - wordStart, f)
                        wordStart = i
                    }
                    inRun = isWS
                }
                words.add(p + wordStart, m.count - wordStart, f)
            }
        }
        sentences = []
    }
}

extension BPETrainerOptions {
    /// SentencePiece refuses to write a model short of vocab_size pieces unless hard_vocab_limit is off.
    var hardVocabLimit: Bool { true }
}
