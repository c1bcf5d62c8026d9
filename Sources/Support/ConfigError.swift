// The error every configuration check throws: the file, the field (dotted, as the file spells it) and what
// is wrong with it, including what would work. Lives here because config files are read by every module
// (model shapes, run settings, data indexes, checkpoint manifests).
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public let file: String?
    public let field: String
    public let message: String

    public init(file: String? = nil, field: String, message: String) {
        self.file = file
        self.field = field
        self.message = message
    }

    public var description: String {
        let location = file.map { "\($0): " } ?? ""
        return field == "-" ? location + message : location + "field '\(field)': \(message)"
    }
}

/// Sizes computed from user input (a config, a file header) with overflow checked: 1e15 layers or a shape of
/// [2^62, 4] must be refused with a message, never trap or wrap around.
public enum CheckedSize {
    /// a · b · …, or nil when the product leaves Int's range or a factor is negative.
    public static func product(_ factors: Int...) -> Int? { product(factors) }

    public static func product(_ factors: [Int]) -> Int? {
        var result = 1
        for f in factors {
            guard f >= 0 else { return nil }
            let (p, overflow) = result.multipliedReportingOverflow(by: f)
            if overflow { return nil }
            result = p
        }
        return result
    }

    public static func sum(_ terms: [Int]) -> Int? {
        var result = 0
        for t in terms {
            let (s, overflow) = result.addingReportingOverflow(t)
            if overflow { return nil }
            result = s
        }
        return result
    }
}
