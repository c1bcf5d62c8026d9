// Dialogues, the data formats people fine-tune Llama 2 on, and the prompt templates that turn a dialogue into
// tokens with a mask of what the model is trained to say.
//
// Formats, detected per file from its first good line and named in the log (a line that fits none, or not
// the file's, is named as file:line and skipped; a file with no good line is refused):
//   SFT          {"prompt", "response"} (ours) | {"messages": [{"role", "content"}, ...]}
//   preferences  {"prompt", "chosen", "rejected", "rating"} (ours) | {"chosen": [messages], "rejected": [messages]}
//                (UltraFeedback) | {"chosen": "\n\nHuman: … \n\nAssistant: …", "rejected": …} (Anthropic HH-RLHF)
// A pair without a rating counts as "negligibly better / unsure": margin 0 in every table.
//
// Templates:
//   separator    per exchange  <s> user <sep>  |  assistant </s>       (a system message leads the first user text)
//   llama2-chat  per exchange  <s> encode("[INST] {user} [/INST]")  |  encode("{assistant}") </s>, the system
//                message folded into the first user turn as "<<SYS>>\n{system}\n<</SYS>>\n\n{user}" (Meta's
//                chat format); contents stripped of surrounding whitespace, each piece encoded on its own.
// The loss (mask 1) is on every assistant turn's tokens and its </s>, never on user or system text.
import Configuration
import Dataset
import Distributed
import Foundation
import Support
import Tokenizer
import Training

public struct Turn: Equatable, Sendable {
    public enum Role: String, Sendable { case system, user, assistant }
    public let role: Role
    public let content: String

    public init(_ role: Role, _ content: String) {
        self.role = role
        self.content = content
    }
}

/// An optional system message, then user and assistant turns alternating, starting with the user.
public struct Dialogue: Equatable, Sendable {
    public let system: String?
    public let turns: [Turn]

    /// Checks the shape; the error says what is wrong, for a `file:line` message.
    public init(_ turns: [Turn]) throws {
        var rest = turns[...]
        if rest.first?.role == .system {
            system = rest.removeFirst().content
        } else {
            system = nil
        }
        guard !rest.isEmpty else { throw TrainingError("a dialogue needs at least one user turn") }
        for (i, turn) in rest.enumerated() where turn.role != (i % 2 == 0 ? .user : .assistant) {
            throw TrainingError(
                "turn \(i + 1) is '\(turn.role.rawValue)'; after an optional system message, user and assistant turns alternate, starting with the user"
            )
        }
        self.turns = Array(rest)
    }

    /// User turns: the paper's "turns per dialogue".
    public var exchanges: Int { turns.filter { $0.role == .user }.count }
    public var endsWithAnswer: Bool { turns.last?.role == .assistant }
}

// MARK: - Formats

public enum DataFormat: String, CaseIterable, Sendable {
    case promptResponse = "prompt/response"
    case messages = "messages"
    case ratedPairs = "prompt/chosen/rejected/rating"
    case messagePairs = "chosen/rejected message lists"
    case hhRLHF = "HH-RLHF text"

    public var isPreference: Bool { self == .ratedPairs || self == .messagePairs || self == .hhRLHF }
}

/// One example of a file: a dialogue to imitate, or a preference between two.
public enum Example: Sendable {
    case dialogue(Dialogue)
    case preference(chosen: Dialogue, rejected: Dialogue, rating: Rating)
}

public enum DialogueData {
    /// The format one JSON object is in, if any.
    /// The fields the formats are told by and read from: all a Parquet file's reader needs to fetch.
    static let fields = ["messages", "prompt", "response", "chosen", "rejected", "rating"]

    public static func format(of object: [String: Any]) -> DataFormat? {
        if object["messages"] is [Any] { return .messages }
        if object["prompt"] is String && object["response"] is String { return .promptResponse }
        if object["prompt"] is String && object["chosen"] is String && object["rejected"] is String {
            return .ratedPairs
        }
        if object["chosen"] is [Any] && object["rejected"] is [Any] { return .messagePairs }
        if let chosen = object["chosen"] as? String, object["rejected"] is String, chosen.contains("Human:") {
            return .hhRLHF
        }
        return nil
    }

    public static func messages(_ value: Any?) throws -> Dialogue {
        guard let list = value as? [[String: Any]] else {
            throw TrainingError("messages must be a list of {\"role\", \"content\"} objects")
        }
        return try Dialogue(
            list.enumerated().map { i, m in
                guard let roleText = m["role"] as? String, let role = Turn.Role(rawValue: roleText),
                    let content = m["content"] as? String
                else {
                    throw TrainingError(
                        "message \(i + 1) needs a role (system, user or assistant) and a string content")
                }
                return Turn(role, content)
            })
    }

    /// "\n\nHuman: … \n\nAssistant: …" as turns.
    static func hhText(_ text: String) throws -> Dialogue {
        var turns: [Turn] = []
        var rest = Substring(text)
        let markers: [(String, Turn.Role)] = [("\n\nHuman:", .user), ("\n\nAssistant:", .assistant), ("Human:", .user)]
        while !rest.isEmpty {
            guard let (marker, role) = markers.first(where: { rest.hasPrefix($0.0) }) else {
                throw TrainingError("HH-RLHF text must be made of \"\\n\\nHuman: …\" and \"\\n\\nAssistant: …\" turns")
            }
            rest = rest.dropFirst(marker.count)
            let next =
                [rest.range(of: "\n\nHuman:"), rest.range(of: "\n\nAssistant:")].compactMap { $0?.lowerBound }.min()
                ?? rest.endIndex
            turns.append(Turn(role, rest[..<next].trimmingCharacters(in: .whitespaces)))
            rest = rest[next...]
        }
        return try Dialogue(turns)
    }

    /// One object as an example of `format`.
    public static func example(_ o: [String: Any], _ format: DataFormat) throws -> Example {
        func rating() throws -> Rating {
            guard let text = o["rating"] as? String else { return .negligiblyBetter }
            guard let r = Rating(text: text) else {
                throw TrainingError(
                    "unknown rating '\(text)'; use significantly better, better, slightly better, negligibly better or unsure"
                )
            }
            return r
        }
        switch format {
        case .promptResponse:
            return .dialogue(
                try Dialogue([Turn(.user, o["prompt"] as! String), Turn(.assistant, o["response"] as! String)]))
        case .messages:
            return .dialogue(try messages(o["messages"]))
        case .ratedPairs:
            let prompt = o["prompt"] as! String
            return .preference(
                chosen: try Dialogue([Turn(.user, prompt), Turn(.assistant, o["chosen"] as! String)]),
                rejected: try Dialogue([Turn(.user, prompt), Turn(.assistant, o["rejected"] as! String)]),
                rating: try rating())
        case .messagePairs:
            return .preference(
                chosen: try messages(o["chosen"]), rejected: try messages(o["rejected"]), rating: try rating())
        case .hhRLHF:
            return .preference(
                chosen: try hhText(o["chosen"] as! String), rejected: try hhText(o["rejected"] as! String),
                rating: try rating())
        }
    }

    /// Reads a JSON Lines file of one format (detected from its first good line, named in the log). `wanted`
    /// says whether SFT (false) or preference (true) data is expected; other lines are named and skipped.
    public static func load(
        _ path: String, preferences wanted: Bool, log: (String) -> Void
    ) throws -> (DataFormat, [(line: Int, example: Example)]) {
        try load(path, preferences: wanted, world: nil, log: log)
    }

    /// As above, read once across `world`'s ranks: each rank reads and parses only the lines that start in
    /// its 1/N of the file's bytes (and their examples are its own); line numbers, the file's format (its
    /// first good line's, in file order) and the skipped lines, said by rank 0 in file order, are the
    /// file's. Every rank must call it.
    public static func load(
        _ path: String, preferences wanted: Bool, world: Communicator?, log: (String) -> Void
    ) throws -> (DataFormat, [(line: Int, example: Example)]) {
        let ranks = world?.size ?? 1, rank = world?.rank ?? 0
        struct Parsed {
            let number: Int
            let object: [String: Any]?
            let problem: String?
            let format: DataFormat?
        }
        var parsed: [Parsed] = []
        // A line is named file:N; a Parquet row, file row N.
        let isParquet = ParquetFile.hasMagic(path)
        let place = isParquet ? { (n: Int) in "\(path) row \(n)" } : { (n: Int) in "\(path):\(n)" }
        if isParquet {
            // Each rank reads its run of row groups; rows are numbered in the file, so no prefix is needed.
            let file = try ParquetFile(path: path)
            // The formats' fields this reader can rebuild; another shape of one (a struct `rating`) is left out,
            // as a field no format reads would be.
            let fields = Self.fields.filter(file.readableFieldNames.contains)
            let groups = file.rowGroups(part: rank, of: ranks, weightedBy: fields)
            let rows = try ParquetRows(file: file, fields: fields, groups: groups)
            while let row = try rows.next() {
                parsed.append(
                    Parsed(
                        number: row.number, object: row.problem == nil ? row.object : nil, problem: row.problem,
                        format: row.problem == nil ? Self.format(of: row.object) : nil))
            }
        } else {
            let bytes: [UInt8]
            do {
                bytes = try ownedLines(of: path, rank: rank, ranks: ranks)
            } catch let error as FileError {
                throw TrainingError("\(path): \(error.message)")
            }
            // Line numbers: this rank's first line is 1 + the lines of the ranks before it.
            let lines = TextLines.lines(bytes, source: path)
            let before = try exclusivePrefix(lines.count, world: world)
            for line in lines {
                switch line.text {
                case let .success(text):
                    if text.allSatisfy({ $0.isWhitespace }) { continue }
                    let object = JSONLines.object(text)
                    parsed.append(
                        Parsed(
                            number: before + line.number, object: object,
                            problem: object == nil ? "not a JSON object" : nil,
                            format: object.flatMap(Self.format(of:))))
                case let .failure(error):
                    parsed.append(
                        Parsed(
                            number: before + line.number, object: nil,
                            problem: "not valid UTF-8 at byte \(error.byte)", format: nil))
                }
            }
        }
        // The file's format: the first good line's, in file order across the ranks.
        let mine = parsed.first { $0.format.map { $0.isPreference == wanted } ?? false }?.format
        let code = mine.map { Double(DataFormat.allCases.firstIndex(of: $0)! + 1) } ?? 0
        let firsts = try world?.allgather(code) ?? [code]
        let format = firsts.first { $0 > 0 }.map { DataFormat.allCases[Int($0) - 1] }
        var examples: [(Int, Example)] = []
        var said: [String] = []
        for line in parsed {
            func skip(_ why: String) {
                said.append("\(place(line.number)): \(why); \(isParquet ? "row" : "line") skipped")
            }
            guard let object = line.object else {
                skip(line.problem ?? "not a JSON object")
                continue
            }
            guard let found = line.format, found.isPreference == wanted else {
                skip(
                    wanted
                        ? "not a preference pair ({\"prompt\", \"chosen\", \"rejected\", \"rating\"}, chosen/rejected message lists, or HH-RLHF text)"
                        : "not an SFT example ({\"prompt\", \"response\"} or {\"messages\": [...]})")
                continue
            }
            guard found == format else {
                skip("is \(found.rawValue), but the file is \(format!.rawValue)")
                continue
            }
            do {
                let example = try Self.example(object, found)
                if case let .dialogue(d) = example, !d.endsWithAnswer {
                    skip("the dialogue ends without an assistant turn to learn")
                    continue
                }
                if case let .dialogue(d) = example,
                    d.turns.contains(where: { $0.role == .assistant && $0.content.allSatisfy(\.isWhitespace) })
                {
                    skip("an assistant turn is empty, so there is nothing to learn from it")
                    continue
                }
                examples.append((line.number, example))
            } catch {
                skip("\(error)")
            }
        }
        // Rank 0 says every rank's skipped lines, in file order; the totals decide for all.
        if let format { log("\(path): \(format.rawValue) format") }
        let counts = try sayInFileOrder(
            said, totals: [Double(said.count), Double(examples.count)], world: world, log: log)
        guard let format, counts[1] > 0 else {
            throw TrainingError(
                "\(path): no line is a usable \(wanted ? "preference pair" : "SFT example") (\(Int(counts[0])) bad)")
        }
        return (format, examples)
    }

    /// The bytes of the lines that start in rank's 1/N of the file (a line belongs to the range holding its
    /// first byte), read alone: the range, and past its end to the end of its last line.
    static func ownedLines(of path: String, rank: Int, ranks: Int) throws -> [UInt8] {
        let file = try FileReader(path: path)
        let (lo, hi) = (file.size * rank / ranks, file.size * (rank + 1) / ranks)
        guard lo < hi else { return [] }
        // From the byte before the range: the first line starts after the first newline at or beyond it.
        let from = max(lo - 1, 0)
        guard var bytes = try file.bytes(count: hi - from, at: from) else {
            throw FileError(path: path, message: "shrank while read")
        }
        let newline = UInt8(ascii: "\n")
        var start = 0
        if lo > 0 {
            guard let first = bytes.firstIndex(of: newline) else { return [] }  // one line spans the whole range
            start = first + 1
        }
        // Past the range, to the end of the line that starts last within it (none when it ended exactly there).
        if bytes.last != newline {
            var position = hi
            while position < file.size {
                let n = min(1 << 20, file.size - position)
                guard let more = try file.bytes(count: n, at: position) else { break }
                if let end = more.firstIndex(of: newline) {
                    bytes += more[...end]
                    break
                }
                bytes += more
                position += n
            }
        }
        return start < bytes.count ? Array(bytes[start...]) : []
    }

    /// Logs every rank's `said` lines through rank 0, in rank order (which is file order when ranks read byte
    /// ranges), and returns `totals` summed over the ranks. Every rank must call it.
    static func sayInFileOrder(
        _ said: [String], totals: [Double], world: Communicator?, log: (String) -> Void
    ) throws -> [Double] {
        guard let world, world.size > 1 else {
            said.forEach(log)
            return totals
        }
        for part in try world.gather(bytes: Array(said.joined(separator: "\n").utf8)) ?? [] where !part.isEmpty {
            for line in String(decoding: part, as: UTF8.self).split(separator: "\n") { log(String(line)) }
        }
        var sums = totals
        try sums.withUnsafeMutableBufferPointer { try world.allreduceSum($0.baseAddress!, count: $0.count) }
        return sums
    }

    /// The sum of `value` over the ranks before this one.
    static func exclusivePrefix(_ value: Int, world: Communicator?) throws -> Int {
        guard let world else { return 0 }
        return Int(try world.allgather(Double(value))[..<world.rank].reduce(0, +))
    }
}

// MARK: - Templates

public struct ChatTemplate: Sendable {
    /// Declared in Configuration, where `finetune.template` names it.
    public typealias Kind = ChatTemplateKind

    public let kind: Kind
    public let tokenizer: Tokenizer
    /// The separator piece (separator template only).
    public let separator: Int32?

    public init(_ kind: Kind, tokenizer: Tokenizer, separator text: String = "<sep>") throws {
        self.kind = kind
        self.tokenizer = tokenizer
        guard kind == .separator else {
            separator = nil
            return
        }
        let bytes = Array(text.utf8)
        guard
            let id = tokenizer.model.pieces.firstIndex(where: {
                $0.bytes == bytes && ($0.kind == .userDefined || $0.kind == .control)
            })
        else {
            throw TrainingError(
                "the tokenizer \(tokenizer.source) has no '\(text)' piece; train one with `llama-train tokenizer train --user-defined-symbols '\(text)'`, set finetune.separator to one of its user-defined or control pieces, or use the llama2-chat template"
            )
        }
        separator = Int32(id)
    }

    /// The tokens of one user turn as the model reads it (no loss on them).
    public func prompt(user: String, system: String? = nil) -> [Int32] {
        switch kind {
        case .separator:
            let text = system.map { "\($0)\n\n\(user)" } ?? user
            return [tokenizer.bosId] + tokenizer.encode(text) + [separator!]
        case .llama2Chat:
            let content = user.trimmingCharacters(in: .whitespacesAndNewlines)
            let folded =
                system.map { "<<SYS>>\n\($0.trimmingCharacters(in: .whitespacesAndNewlines))\n<</SYS>>\n\n\(content)" }
                ?? content
            return [tokenizer.bosId] + tokenizer.encode("[INST] \(folded) [/INST]")
        }
    }

    /// The tokens of one assistant turn and its </s>: what the model is trained to say.
    public func answer(_ text: String) -> [Int32] {
        let content = kind == .llama2Chat ? text.trimmingCharacters(in: .whitespacesAndNewlines) : text
        return tokenizer.encode(content) + [tokenizer.eosId]
    }

    /// A whole dialogue: tokens and, per token, whether the loss counts on it (assistant turns only).
    public func encode(_ dialogue: Dialogue) -> (tokens: [Int32], answer: [Bool]) {
        var tokens: [Int32] = [], answer: [Bool] = []
        for (i, turn) in dialogue.turns.enumerated() {
            let piece =
                turn.role == .user
                ? prompt(user: turn.content, system: i == 0 ? dialogue.system : nil) : self.answer(turn.content)
            tokens += piece
            answer += [Bool](repeating: turn.role == .assistant, count: piece.count)
        }
        return (tokens, answer)
    }
}
