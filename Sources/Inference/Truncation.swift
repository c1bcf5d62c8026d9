// What a command does with a prompt longer than the model's context: refuse it (the default for scoring and
// generation, so a score or a continuation never silently reads less than it was given), or cut it, keeping
// its last tokens (`left`, the end a reward is read at) or its first (`right`).
public enum Truncation: String, CaseIterable, Sendable {
    case refuse, left, right

    /// `ids` cut to at most `limit` tokens as this policy says; `what` names the input in the refusal.
    public func apply(_ ids: [Int32], limit: Int, what: String) throws -> [Int32] {
        guard ids.count > limit else { return ids }
        switch self {
        case .refuse: throw TruncationError(what: what, tokens: ids.count, limit: limit)
        case .left: return Array(ids.suffix(limit))
        case .right: return Array(ids.prefix(limit))
        }
    }
}

public struct TruncationError: Error, CustomStringConvertible {
    public let what: String
    public let tokens: Int
    public let limit: Int

    public var description: String {
        "\(what) is \(tokens) tokens, more than the \(limit) the model's context allows; shorten it, or pass --truncate left (keep the end) or right (keep the start)"
    }
}
