// The command line, table-driven: each command declares a `CommandSpec` (its flags with their kinds, ranges,
// defaults and help), and that one table generates the usage text, `llama-train CMD --help`, and the typed
// parsing. A value is checked when it is parsed, so `--micro-batch 0` or `--bucket-mb nan` never reach the
// trainer. Flags that set a declared setting (a config key, a training option) are built from its declaration
// (Support/Settings.swift), range and default included. (No package dependencies, so no swift-argument-parser.)
//
// Accepted: `--flag value`, `--flag=value`, bare `--switch`, and list flags that take every value up to the
// next flag (`--input a.txt b.txt`). Refused with "see `llama-train CMD --help`": unknown flags, a switch given
// a value (`--background-save=true`), a missing value, a value out of range, a stray argument.
import Foundation
import Support

struct UsageError: Error, CustomStringConvertible {
    let message: String
    /// The command whose help says more ("pretrain", "tokenizer train"); nil for the top level.
    var command: String?

    init(_ message: String, command: String? = nil) {
        self.message = message
        self.command = command
    }

    var description: String {
        message + "\nsee `llama-train \(command.map { "\($0) " } ?? "")--help`"
    }
}

struct Flag: Sendable {
    /// What the flag's value may be: Support's ValueKind, the type declarations use too.
    typealias Kind = ValueKind

    let name: String
    let kind: Kind
    /// What stands for the value in the usage text (N, FILE, X).
    let placeholder: String
    let help: String
    let required: Bool
    /// The value when the flag is absent, as the command line would write it; read by Arguments' int, number
    /// and list, and shown in help, so a default is written only here.
    let defaultValue: String?
    /// The help line's tail: what the value accepts and the default.
    let note: String

    init(
        _ name: String, _ kind: Kind, _ placeholder: String = "", required: Bool = false,
        default defaultValue: String? = nil, _ help: String
    ) {
        precondition(defaultValue.map(kind.admits(argument:)) ?? true, "--\(name)'s default is outside its kind")
        self.name = name
        self.kind = kind
        self.placeholder = placeholder
        self.help = help
        self.required = required
        self.defaultValue = defaultValue
        let parts = (kind.isFree ? [] : [kind.accepts]) + (defaultValue.map { ["default \($0)"] } ?? [])
        note = parts.isEmpty ? "" : " (" + parts.joined(separator: "; ") + ")"
    }

    /// A switch, or a flag whose placeholder the kind implies.
    init(_ name: String, _ kind: Kind, _ help: String) {
        self.init(name, kind, "", help)
    }

    /// The flag of a declared setting: its kind, placeholder, help and default come from the declaration.
    /// `name` gives it another flag than the declared one (or one where the declaration has none).
    init<Root>(_ setting: Setting<Root>, name: String? = nil) {
        guard let flag = name ?? setting.flag else { preconditionFailure("\(setting.name) declares no flag") }
        self.name = flag
        kind = setting.kind
        placeholder = setting.placeholder
        help = setting.help
        required = false
        // Read through the setting (Arguments.apply), which holds the default.
        defaultValue = nil
        note = setting.helpNote
    }

    var usage: String {
        let value: String
        switch kind {
        case .toggle: value = ""
        case .list: value = " \(placeholder)..."
        case let .choice(words): value = " " + (placeholder.isEmpty ? words.joined(separator: "|") : placeholder)
        default: value = " \(placeholder)"
        }
        return required ? "--\(name)\(value)" : "[--\(name)\(value)]"
    }

    /// What the kind accepts, for help and for errors.
    var accepts: String { kind.accepts }
}

extension SettingsBlock {
    /// The flags of the settings this block declares one for.
    var flags: [Flag] { flagged.map { Flag($0) } }
}

struct CommandSpec: Sendable {
    /// One or two words: "pretrain", "tokenizer train".
    let name: String
    let summary: String
    let flags: [Flag]
    let run: @Sendable (inout Arguments) throws -> Void

    var usageLine: String { "llama-train \(name) " + flags.map(\.usage).joined(separator: " ") }

    var help: String {
        let width = min(34, (flags.map { $0.usage.count }.max() ?? 0) + 2)
        var lines = ["usage: \(usageLine)", "", summary]
        if !flags.isEmpty { lines += ["", "flags:"] }
        for flag in flags {
            let left = "  " + flag.usage.trimmingCharacters(in: ["[", "]"])
            let pad =
                left.count < width + 2
                ? String(repeating: " ", count: width + 2 - left.count)
                : "\n" + String(repeating: " ", count: width + 2)
            lines.append(left + pad + flag.help + flag.note)
        }
        return lines.joined(separator: "\n")
    }
}

/// The parsed flags of one command: every value already checked against its flag's kind.
struct Arguments: Sendable {
    let spec: CommandSpec
    private var values: [String: [String]] = [:]
    private var toggles: Set<String> = []

    init(_ arguments: ArraySlice<String>, spec: CommandSpec) throws {
        self.spec = spec
        let byName = Dictionary(uniqueKeysWithValues: spec.flags.map { ($0.name, $0) })
        func usage(_ message: String) -> UsageError { UsageError(message, command: spec.name) }
        var i = arguments.startIndex
        while i < arguments.endIndex {
            let arg = arguments[i]
            i += 1
            guard arg.hasPrefix("--"), arg.count > 2 else { throw usage("unexpected argument '\(arg)'") }
            var name = String(arg.dropFirst(2))
            var inline: String?
            if let eq = name.firstIndex(of: "=") {
                inline = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            guard let flag = byName[name] else {
                let near = spec.flags.map(\.name).filter { $0.hasPrefix(String(name.prefix(3))) }
                throw usage(
                    "unknown flag --\(name)"
                        + (near.isEmpty ? "" : "; did you mean --\(near.joined(separator: ", --"))?"))
            }
            switch flag.kind {
            case .toggle:
                guard inline == nil else {
                    throw usage("--\(name) is a switch and takes no value: write --\(name) alone")
                }
                toggles.insert(name)
            case .list:
                if let inline { values[name, default: []].append(inline) }
                while i < arguments.endIndex && !arguments[i].hasPrefix("--") {
                    values[name, default: []].append(arguments[i])
                    i += 1
                }
                guard values[name]?.isEmpty == false else { throw usage("--\(name) needs \(flag.accepts)") }
            default:
                let value: String
                if let inline {
                    value = inline
                } else {
                    guard i < arguments.endIndex, !arguments[i].hasPrefix("--") || Double(arguments[i]) != nil else {
                        throw usage("--\(name) needs a value: \(flag.accepts)")
                    }
                    value = arguments[i]
                    i += 1
                }
                try Self.check(value, flag, command: spec.name)
                values[name] = [value]
            }
        }
        for flag in spec.flags where flag.required && values[flag.name] == nil {
            throw usage("--\(flag.name) is required")
        }
    }

    private static func check(_ value: String, _ flag: Flag, command: String) throws {
        guard flag.kind.admits(argument: value) else {
            throw UsageError("--\(flag.name) expects \(flag.accepts), got '\(value)'", command: command)
        }
    }

    private func declared(_ name: String) {
        precondition(
            spec.flags.contains { $0.name == name }, "\(spec.name) reads --\(name), which its spec does not declare")
    }

    /// The value given on the command line; nil when absent (the flag's default is not consulted, so this
    /// also says whether the flag was given).
    func string(_ name: String) -> String? {
        declared(name)
        return values[name]?.last
    }

    /// The value given, else the flag's declared default.
    private func valueOrDefault(_ name: String) -> String? {
        string(name) ?? spec.flags.first { $0.name == name }?.defaultValue
    }

    func require(_ name: String) throws -> String {
        guard let v = string(name) else { throw UsageError("--\(name) is required", command: spec.name) }
        return v
    }

    /// The values given, else the flag's declared default split at spaces.
    func list(_ name: String) -> [String] {
        declared(name)
        let fallback = spec.flags.first { $0.name == name }?.defaultValue?.split(separator: " ").map(String.init)
        return values[name] ?? fallback ?? []
    }

    /// The value given, else the flag's declared default; nil when neither.
    func int(_ name: String) -> Int? { valueOrDefault(name).flatMap { Int($0) } }
    func number(_ name: String) -> Double? { valueOrDefault(name).flatMap { Double($0) } }

    /// A flag whose declared default is the value, so present or not it has one.
    func string(declared name: String) -> String {
        guard let value = valueOrDefault(name) else { preconditionFailure("--\(name) declares no default") }
        return value
    }

    func int(declared name: String) -> Int {
        guard let value = int(name) else { preconditionFailure("--\(name) declares no default") }
        return value
    }

    func number(declared name: String) -> Double {
        guard let value = number(name) else { preconditionFailure("--\(name) declares no default") }
        return value
    }

    /// A default that depends on another value (--kv-heads: as many as --heads), so no flag can declare it.
    func int(_ name: String, otherwise value: Int) -> Int { int(name) ?? value }

    func flag(_ name: String) -> Bool {
        declared(name)
        return toggles.contains(name)
    }

    func usage(_ message: String) -> UsageError { UsageError(message, command: spec.name) }

    /// Writes the flags this command line gave for `block`'s settings into `root`. Settings whose flag this
    /// command does not take are left alone, so a command may take a few of a block's flags.
    func apply<Root>(_ block: SettingsBlock<Root>, to root: inout Root) {
        for setting in block.flagged {
            guard let name = setting.flag, spec.flags.contains(where: { $0.name == name }) else { continue }
            let given: String? = setting.kind == .toggle ? (toggles.contains(name) ? "true" : nil) : values[name]?.last
            guard let given else { continue }
            // Checked against the same kind when parsed, so a refusal here is a programmer error.
            precondition(
                setting.apply(argument: given, to: &root),
                "--\(name) '\(given)' passed parsing but not its setting")
        }
    }

    /// The declared defaults of `block`, then the flags this command line gave for it.
    func settings<Root>(_ block: SettingsBlock<Root>, from root: Root) -> Root {
        var result = root
        block.setDefaults(&result)
        apply(block, to: &result)
        return result
    }
}
