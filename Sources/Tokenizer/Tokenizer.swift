// Tokenizer: SentencePiece BPE encoding and decoding, exactly as the sentencepiece library does them for
// the settings Llama 2 uses (identity normalisation, byte fallback, split digits, dummy prefix).
//
// What this is: loading with SentencePiece's checks, normalisation, greedy merges by score, byte fallback,
// and decoding with SentencePiece's UTF-8 repair. What this is not: a unigram model or a charsmap normaliser;
// such files are refused with the reason. Pieces are handled as UTF-8 bytes throughout.
import Foundation
import Support

public enum TokenizerError: Error, CustomStringConvertible, Equatable {
    case invalidModel(file: String, reason: String)
    case idOutOfRange(id: Int32, vocabSize: Int)

    public var description: String {
        switch self {
        case let .invalidModel(file, reason): "\(file): not a usable SentencePiece BPE model: \(reason)"
        case let .idOutOfRange(id, size): "token id \(id) is outside the vocabulary [0, \(size))"
        }
    }
}

/// U+2581, the visible space SentencePiece puts where the text had a space.
let spaceSymbol: [UInt8] = [0xE2, 0x96, 0x81]

public final class Tokenizer: @unchecked Sendable {
    public let model: SentencePieceModel
    /// Where the model came from, for error messages and shard headers.
    public let source: String
    /// Map A: pieces that merges may produce (normal, user-defined, unused).
    let mergeable: PieceTable
    /// Map B: unknown, control and byte pieces, looked up first when turning pieces into ids.
    let special: PieceTable
    let byteIds: [Int32]
    let userDefined: [[UInt8]]
    let hasUnused: Bool
    let scores: [Float]
    let kinds: [SentencePiece.Kind]

    public var vocabSize: Int { model.pieces.count }
    public var unkId: Int32 { Int32(model.trainer.unkId) }
    public var bosId: Int32 { Int32(model.trainer.bosId) }
    public var eosId: Int32 { Int32(model.trainer.eosId) }

    public convenience init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TokenizerError.invalidModel(file: path, reason: "cannot read it: \(UnreadablePath.reason(path))")
        }
        try self.init(bytes: data, source: path)
    }

    /// A tokenizer from a tokenizer.model's bytes already read; `source` names them in errors.
    public convenience init(bytes data: Data, source path: String) throws {
        guard !data.isEmpty else {
            throw TokenizerError.invalidModel(
                file: path,
                reason: "the file is empty (0 bytes); train one with `llama-train tokenizer train` or copy it again")
        }
        let model: SentencePieceModel
        do {
            model = try SentencePieceModel(serialized: [UInt8](data))
        } catch {
            throw TokenizerError.invalidModel(file: path, reason: "\(error)")
        }
        try self.init(model: model, source: path)
    }

    /// Builds the lookup tables, refusing what SentencePiece refuses (sentencepiece_processor/model_interface).
    public init(model: SentencePieceModel, source: String = "<memory>") throws {
        func invalid(_ reason: String) -> TokenizerError { .invalidModel(file: source, reason: reason) }
        guard model.trainer.modelType == .bpe else {
            throw invalid("model_type is \(model.trainer.modelType), only BPE is supported")
        }
        guard model.normalizer.precompiledCharsmap.isEmpty else {
            throw invalid(
                "normaliser '\(model.normalizer.name)' carries a precompiled charsmap; only identity normalisation is supported"
            )
        }
        guard !model.pieces.isEmpty else { throw invalid("it has no pieces") }
        self.model = model
        self.source = source
        var a = PieceTable(capacity: model.pieces.count), b = PieceTable(capacity: 512)
        var byteIds = [Int32](repeating: -1, count: 256)
        var unknowns = 0
        var user: [[UInt8]] = []
        for (id, piece) in model.pieces.enumerated() {
            guard !piece.bytes.isEmpty else { throw invalid("piece \(id) is empty") }
            // SentencePiece's pieces are UTF-8 text; an invalid one would be matched and decoded as U+FFFD.
            if let bad = TextLines.firstInvalidByte(piece.bytes[...]) {
                throw invalid(
                    "piece \(id) is not valid UTF-8 (byte \(bad + 1) of \(piece.bytes.count)); the file is damaged")
            }
            let fresh: Bool
            switch piece.kind {
            case .normal, .userDefined, .unused:
                fresh = a.insert(piece.bytes, Int32(id))
                if piece.kind == .userDefined { user.append(piece.bytes) }
            case .unknown, .control, .byte:
                fresh = b.insert(piece.bytes, Int32(id))
                if piece.kind == .unknown { unknowns += 1 }
                if piece.kind == .byte {
                    guard model.trainer.byteFallback else {
                        throw invalid("byte piece \(piece.text) without byte_fallback")
                    }
                    guard let value = Tokenizer.byteValue(piece.bytes) else {
                        throw invalid("byte piece \(id) '\(piece.text)' is not of the form <0xNN>")
                    }
                    byteIds[Int(value)] = Int32(id)
                }
            }
            guard fresh else { throw invalid("piece '\(piece.text)' (id \(id)) is defined twice") }
        }
        guard unknowns == 1 else { throw invalid("it must have exactly one unknown piece, has \(unknowns)") }
        let unk = model.trainer.unkId
        guard unk >= 0, unk < model.pieces.count, model.pieces[unk].kind == .unknown else {
            throw invalid("unk_id \(unk) does not name the unknown piece")
        }
        if model.trainer.byteFallback, let missing = byteIds.firstIndex(of: -1) {
            throw invalid(String(format: "byte_fallback is set but piece <0x%02X> is missing", missing))
        }
        mergeable = a
        special = b
        self.byteIds = byteIds
        userDefined = user.sorted { $0.count > $1.count }  // longest match first
        hasUnused = model.pieces.contains { $0.kind == .unused }
        scores = model.pieces.map(\.score)
        kinds = model.pieces.map(\.kind)
    }

    static func byteValue(_ bytes: [UInt8]) -> UInt8? {
        guard bytes.count == 6, bytes.starts(with: Array("<0x".utf8)), bytes[5] == UInt8(ascii: ">") else { return nil }
        return UInt8(String(decoding: bytes[3..<5], as: UTF8.self), radix: 16)
    }

    // MARK: - Normalisation

    /// Identity normalisation: optional whitespace clean-up, spaces to U+2581, the dummy prefix (or suffix).
    func normalize(_ text: String) -> [UInt8] {
        Tokenizer.normalize(
            Array(text.utf8), spec: model.normalizer, whitespaceAsSuffix: model.trainer.treatWhitespaceAsSuffix)
    }

    static func normalize(_ bytes: [UInt8], spec n: NormalizerSpec, whitespaceAsSuffix suffix: Bool) -> [UInt8] {
        var input = bytes
        if n.removeExtraWhitespaces {
            var cleaned: [UInt8] = []
            cleaned.reserveCapacity(input.count)
            var pendingSpace = false
            for b in input {
                if b == 0x20 {
                    pendingSpace = !cleaned.isEmpty
                } else {
                    if pendingSpace { cleaned.append(0x20) }
                    pendingSpace = false
                    cleaned.append(b)
                }
            }
            input = cleaned
        }
        if input.isEmpty { return [] }
        var out: [UInt8] = []
        out.reserveCapacity(input.count + 3 + input.count / 4)
        let space: [UInt8] = n.escapeWhitespaces ? spaceSymbol : [0x20]
        if n.addDummyPrefix && !suffix { out.append(contentsOf: space) }
        for b in input {
            if b == 0x20 { out.append(contentsOf: space) } else { out.append(b) }
        }
        if n.addDummyPrefix && suffix { out.append(contentsOf: space) }
        return out
    }

    // MARK: - Encoding

    /// Token ids of `text`, as SentencePieceProcessor.encode gives them, with optional BOS/EOS.
    public func encode(_ text: String, bos: Bool = false, eos: Bool = false) -> [Int32] {
        var ids: [Int32] = []
        if bos && model.trainer.bosId >= 0 { ids.append(bosId) }
        let normalized = normalize(text)
        if !normalized.isEmpty { encodeNormalized(normalized, into: &ids) }
        if eos && model.trainer.eosId >= 0 { ids.append(eosId) }
        return ids
    }

    /// Whether a document may be encoded in parts cut just before a "\n", the later parts without the dummy
    /// prefix, with the same ids as the whole: true when no piece holds a newline (so no merge reaches across
    /// one) and normalisation does not look at the whole text (no whitespace clean-up, no dummy suffix).
    /// Llama 2's tokenizer qualifies. Data preparation uses it to stream documents larger than its buffer.
    public var encodesPartsAtNewlines: Bool {
        !model.normalizer.removeExtraWhitespaces && !model.trainer.treatWhitespaceAsSuffix
            && !model.pieces.contains { $0.bytes.contains(0x0A) }
    }

    /// `encode` of one part of a document cut before a "\n" (see `encodesPartsAtNewlines`): only the first
    /// part gets the dummy prefix and BOS, only the last EOS.
    public func encodePart(_ text: String, first: Bool, last: Bool) -> [Int32] {
        if first { return encode(text, bos: true, eos: last) }
        var ids: [Int32] = []
        var spec = model.normalizer
        spec.addDummyPrefix = false
        let normalized = Tokenizer.normalize(Array(text.utf8), spec: spec, whitespaceAsSuffix: false)
        if !normalized.isEmpty { encodeNormalized(normalized, into: &ids) }
        if last && model.trainer.eosId >= 0 { ids.append(eosId) }
        return ids
    }

    /// Pieces of `ids` as text (byte pieces spelled <0xNN>), for display.
    public func pieces(_ ids: [Int32]) -> [String] {
        ids.map { $0 >= 0 && Int($0) < vocabSize ? model.pieces[Int($0)].text : "<invalid \($0)>" }
    }

    /// A run of the normalised text; merged-away symbols keep length 0.
    private struct Symbol {
        var start: Int32
        var length: Int32
        var prev: Int32
        var next: Int32
        var frozen: Bool
    }

    private struct Candidate {
        var score: Float
        var left: Int32
        var right: Int32
        var size: Int32
        /// Higher score first; on a tie, the leftmost pair (SentencePiece's SymbolPairComparator).
        @inline(__always) func before(_ o: Candidate) -> Bool { score > o.score || (score == o.score && left < o.left) }
    }

    private func encodeNormalized(_ text: [UInt8], into ids: inout [Int32]) {
        text.withUnsafeBufferPointer { buffer in
            let p = buffer.baseAddress!, n = buffer.count
            // 1. One symbol per code point, or per user-defined piece (longest match; never merged).
            var symbols: [Symbol] = []
            symbols.reserveCapacity(n)
            var i = 0
            while i < n {
                var matched = 0
                for u in userDefined where u.count <= n - i && memcmp(p + i, u, u.count) == 0 {
                    matched = u.count
                    break
                }
                let len = matched > 0 ? matched : min(utf8Length(p[i]), n - i)
                let index = Int32(symbols.count)
                symbols.append(
                    Symbol(start: Int32(i), length: Int32(len), prev: index - 1, next: index + 1, frozen: matched > 0))
                i += len
            }
            let count = symbols.count
            if count > 0 { symbols[count - 1].next = -1 }
            var heap = BinaryHeap<Candidate>(capacity: count)
            var revMerge: [[UInt8]: ([UInt8], [UInt8])] = [:]

            func push(_ l: Int32, _ r: Int32) {
                guard l >= 0, r >= 0, !symbols[Int(l)].frozen, !symbols[Int(r)].frozen else { return }
                let size = Int(symbols[Int(l)].length + symbols[Int(r)].length)
                guard let id = mergeable.find(p + Int(symbols[Int(l)].start), size) else { return }
                heap.push(Candidate(score: scores[Int(id)], left: l, right: r, size: Int32(size))) { $0.before($1) }
            }

            // 2. Every adjacent pair that forms a piece is a candidate.
            for s in 0..<max(count - 1, 0) { push(Int32(s), Int32(s + 1)) }
            // 3. Merge the best candidate until none is left; stale candidates are skipped.
            while let c = heap.pop(by: { $0.before($1) }) {
                let l = Int(c.left), r = Int(c.right)
                let left = symbols[l], right = symbols[r]
                if left.length == 0 || right.length == 0 || left.length + right.length != c.size { continue }
                if hasUnused {
                    let whole = Array(buffer[Int(left.start)..<Int(left.start + c.size)])
                    revMerge[whole] = (
                        Array(buffer[Int(left.start)..<Int(left.start + left.length)]),
                        Array(buffer[Int(right.start)..<Int(right.start + right.length)])
                    )
                }
                symbols[l].length = c.size
                symbols[r].length = 0
                symbols[l].next = right.next
                if right.next >= 0 { symbols[Int(right.next)].prev = Int32(l) }
                push(left.prev, Int32(l))
                push(Int32(l), right.next)
            }
            // 4. Pieces to ids: map B first, then A; unused pieces re-split; unknown bytes fall back.
            var lastWasUnknown = false
            func emit(_ piece: UnsafeBufferPointer<UInt8>) {
                if let id = special.find(piece.baseAddress!, piece.count)
                    ?? mergeable.find(piece.baseAddress!, piece.count)
                {
                    if kinds[Int(id)] == .unused, let (left, right) = revMerge[Array(piece)] {
                        left.withUnsafeBufferPointer { emit($0) }
                        right.withUnsafeBufferPointer { emit($0) }
                        return
                    }
                    ids.append(id)
                    lastWasUnknown = false
                } else if model.trainer.byteFallback {
                    for b in piece { ids.append(byteIds[Int(b)]) }
                    lastWasUnknown = false
                } else {
                    if !lastWasUnknown { ids.append(unkId) }  // a run of unknown symbols is one <unk>
                    lastWasUnknown = true
                }
            }
            var s: Int32 = count > 0 ? 0 : -1
            while s >= 0 {
                emit(UnsafeBufferPointer(start: p + Int(symbols[Int(s)].start), count: Int(symbols[Int(s)].length)))
                s = symbols[Int(s)].next
            }
        }
    }

    // MARK: - Decoding

    /// Text of `ids`, as SentencePieceProcessor.decode gives it.
    public func decode(_ ids: [Int32]) throws -> String {
        var out: [UInt8] = []
        var pendingBytes: [UInt8] = []
        var seenPiece = false
        let stripsDummy = model.normalizer.addDummyPrefix || model.normalizer.removeExtraWhitespaces
        for id in ids {
            guard id >= 0, Int(id) < vocabSize else { throw TokenizerError.idOutOfRange(id: id, vocabSize: vocabSize) }
            let piece = model.pieces[Int(id)]
            if piece.kind == .byte {
                pendingBytes.append(Tokenizer.byteValue(piece.bytes)!)
                continue
            }
            appendRepairingUTF8(pendingBytes, to: &out)
            pendingBytes.removeAll(keepingCapacity: true)
            switch piece.kind {
            case .control:
                continue
            case .unknown:
                out.append(contentsOf: model.trainer.unkSurface.utf8)
            default:
                var bytes = piece.bytes[...]
                // Only the dummy prefix of the very first piece is consumed.
                if !seenPiece && out.isEmpty && stripsDummy && !model.trainer.treatWhitespaceAsSuffix
                    && bytes.starts(with: spaceSymbol)
                {
                    bytes = bytes.dropFirst(3)
                }
                appendUnescaped(bytes, to: &out)
            }
            seenPiece = true
        }
        appendRepairingUTF8(pendingBytes, to: &out)
        if model.trainer.treatWhitespaceAsSuffix && stripsDummy && out.last == 0x20 { out.removeLast() }
        return String(decoding: out, as: UTF8.self)
    }

    private func appendUnescaped(_ bytes: ArraySlice<UInt8>, to out: inout [UInt8]) {
        var i = bytes.startIndex
        while i < bytes.endIndex {
            if bytes[i] == 0xE2, i + 2 < bytes.endIndex, bytes[i + 1] == 0x96, bytes[i + 2] == 0x81 {
                out.append(0x20)
                i += 3
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
    }
}

/// Bytes of the UTF-8 sequence a lead byte starts (1 for continuation or invalid bytes).
@inline(__always) func utf8Length(_ lead: UInt8) -> Int {
    lead < 0xC0 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : lead < 0xF8 ? 4 : 1
}

/// SentencePiece's UTF-8 repair: each invalid position becomes U+FFFD and consumes one byte, so
/// <0xE4><0xB8> decodes to two replacement characters (Swift's String(decoding:) would give one).
func appendRepairingUTF8(_ bytes: [UInt8], to out: inout [UInt8]) {
    var i = 0
    let replacement: [UInt8] = [0xEF, 0xBF, 0xBD]
    while i < bytes.count {
        let n = validSequenceLength(bytes, i)
        if n > 0 {
            out.append(contentsOf: bytes[i..<(i + n)])
            i += n
        } else {
            out.append(contentsOf: replacement)
            i += 1
        }
    }
}

/// Length of the well-formed UTF-8 sequence at i (Unicode Table 3-7), or 0.
func validSequenceLength(_ b: [UInt8], _ i: Int) -> Int {
    let c0 = b[i]
    if c0 < 0x80 { return 1 }
    func cont(_ k: Int, _ lo: UInt8 = 0x80, _ hi: UInt8 = 0xBF) -> Bool {
        i + k < b.count && b[i + k] >= lo && b[i + k] <= hi
    }
    switch c0 {
    case 0xC2...0xDF: return cont(1) ? 2 : 0
    case 0xE0: return cont(1, 0xA0) && cont(2) ? 3 : 0
    case 0xE1...0xEC, 0xEE...0xEF: return cont(1) && cont(2) ? 3 : 0
    case 0xED: return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0
    case 0xF0: return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0
    case 0xF1...0xF3: return cont(1) && cont(2) && cont(3) ? 4 : 0
    case 0xF4: return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0
    default: return 0
    }
}
