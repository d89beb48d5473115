/// Reads LLVM's BPF assembly syntax, the text ``Disassembler`` and `llvm-objdump` print, into
/// instructions.
///
/// One instruction per line; `name:` defines a label (alone on its line or before an
/// instruction); jump and call targets are offsets (`goto +0x1`, `goto -3`) or label names
/// (`goto pass`, `call parse`); `call bpf_sk_assign` calls a helper by name. Numbers are
/// decimal or hex, with an optional sign. `#` and `//` start comments, except that the
/// annotations the ``Disassembler`` writes (`# bpf2bpf`, `# kfunc`, `# func`) are read.
///
/// ```swift
/// let program = try TextAssembler.assemble("""
///         r0 = 0x0
///         if w1 == 0x1f90 goto ok
///         exit
///     ok:
///         r0 = 0x1
///         exit
///     """)
/// ```
public enum TextAssembler {
    /// Assembles source text into a program with labels resolved.
    /// - Throws: ``TextAssemblyError`` with the line and column of the first problem.
    public static func assemble(_ source: String) throws(TextAssemblyError) -> Assembly {
        let (statements, lines) = try parse(source)
        do {
            return try BPFAssembly.assemble(statements)
        } catch {
            // Map the instruction index back to its source line.
            var instructionLines: [Int] = []
            for (statement, line) in zip(statements, lines) {
                if case .label = statement.kind { continue }
                instructionLines.append(line)
            }
            let line =
                instructionLines.indices.contains(error.instructionIndex)
                ? instructionLines[error.instructionIndex] : (lines.last ?? 1)
            throw TextAssemblyError(line: line, column: 1, message: error.description)
        }
    }

    /// Parses source text into statements (labels unresolved), with the line of each.
    public static func parse(_ source: String) throws(TextAssemblyError) -> ([Statement], [Int]) {
        var statements: [Statement] = []
        var lines: [Int] = []
        var lineNumber = 0
        for rawLine in source.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            var parser = try LineParser(String(rawLine), line: lineNumber)
            for statement in try parser.parseLine() {
                statements.append(statement)
                lines.append(lineNumber)
            }
        }
        return (statements, lines)
    }
}

/// Why text did not assemble: the line and column (1-based) and what is wrong there.
public struct TextAssemblyError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The 1-based line number.
    public var line: Int
    /// The 1-based column.
    public var column: Int
    /// What is wrong there.
    public var message: String
    /// An error at `line` and `column` (both 1-based).
    public init(line: Int, column: Int, message: String) {
        self.line = line
        self.column = column
        self.message = message
    }
    /// `LINE:COLUMN: MESSAGE`, as compilers print diagnostics.
    public var description: String { "\(line):\(column): \(message)" }
}

private struct Token: Equatable {
    enum Kind: Equatable { case word, number, symbol }
    var kind: Kind
    var text: String
    var column: Int
    var value: Int64 = 0
}

private struct LineParser {
    let line: Int
    var tokens: [Token] = []
    var position = 0
    var annotation: String?
    var endColumn: Int

    init(_ text: String, line: Int) throws(TextAssemblyError) {
        self.line = line
        var body = Substring(text)
        // Comments: `#` or `//`. Keep the disassembler's annotations.
        let chars = Array(text)
        var cut = chars.count
        var i = 0
        while i < chars.count {
            if chars[i] == "#" || (chars[i] == "/" && i + 1 < chars.count && chars[i + 1] == "/") {
                cut = i
                break
            }
            i += 1
        }
        if cut < chars.count {
            let comment = String(chars[cut...]).drop { $0 == "#" || $0 == "/" }
                .trimmingCharacters(in: " \t\r")
            if ["bpf2bpf", "kfunc", "func"].contains(comment) { annotation = comment }
            body = Substring(String(chars[..<cut]))
        }
        endColumn = body.count + 1
        tokens = try Self.tokenize(Array(body), line: line)
    }

    private static let symbols = [
        "s>>=", "s/=", "s%=", "s>=", "s<=", "<<=", ">>=", "s>", "s<",
        "+=", "-=", "*=", "/=", "%=", "|=", "&=", "^=", "==", "!=", ">=", "<=",
        "=", "(", ")", "*", ",", "+", "-", "[", "]", ":", ">", "<", "&",
    ]

    private static func tokenize(_ chars: [Character], line: Int) throws(TextAssemblyError) -> [Token] {
        var tokens: [Token] = []
        var i = 0
        outer: while i < chars.count {
            let c = chars[i]
            if c == " " || c == "\t" || c == "\r" {
                i += 1
                continue
            }
            for symbol in symbols where matches(chars, i, symbol) {
                tokens.append(Token(kind: .symbol, text: symbol, column: i + 1))
                i += symbol.count
                continue outer
            }
            if c.isNumber {
                let start = i
                while i < chars.count && (chars[i].isLetter || chars[i].isNumber || chars[i] == "_") { i += 1 }
                let text = String(chars[start..<i])
                guard let value = parseNumber(text) else {
                    throw TextAssemblyError(line: line, column: start + 1, message: "'\(text)' is not a number")
                }
                tokens.append(Token(kind: .number, text: text, column: start + 1, value: value))
                continue
            }
            if c.isLetter || c == "_" || c == "." || c == "$" {
                let start = i
                while i < chars.count
                    && (chars[i].isLetter || chars[i].isNumber || chars[i] == "_" || chars[i] == "." || chars[i] == "$")
                {
                    i += 1
                }
                tokens.append(Token(kind: .word, text: String(chars[start..<i]), column: start + 1))
                continue
            }
            throw TextAssemblyError(line: line, column: i + 1, message: "unexpected character '\(c)'")
        }
        return tokens
    }

    private static func matches(_ chars: [Character], _ i: Int, _ symbol: String) -> Bool {
        var j = i
        for s in symbol {
            guard j < chars.count, chars[j] == s else { return false }
            j += 1
        }
        // `s>` and friends: not the start of a word like `skb` or `store_release`.
        if symbol.first == "s" && i > 0 && (chars[i - 1].isLetter || chars[i - 1].isNumber || chars[i - 1] == "_") {
            return false
        }
        return true
    }

    private static func parseNumber(_ text: String) -> Int64? {
        let lower = text.lowercased()
        if lower.hasPrefix("0x") { return UInt64(lower.dropFirst(2), radix: 16).map { Int64(bitPattern: $0) } }
        if lower.hasPrefix("0b") { return UInt64(lower.dropFirst(2), radix: 2).map { Int64(bitPattern: $0) } }
        return Int64(lower)
    }

    // MARK: Token access

    var atEnd: Bool { position >= tokens.count }
    var column: Int { atEnd ? endColumn : tokens[position].column }

    func error(_ message: String, at column: Int? = nil) -> TextAssemblyError {
        TextAssemblyError(line: line, column: column ?? self.column, message: message)
    }

    func peek(_ offset: Int = 0) -> Token? {
        position + offset < tokens.count ? tokens[position + offset] : nil
    }

    mutating func take(_ text: String) -> Bool {
        if let token = peek(), token.kind != .number, token.text == text {
            position += 1
            return true
        }
        return false
    }

    mutating func expect(_ text: String) throws(TextAssemblyError) {
        guard take(text) else {
            throw error("expected '\(text)'" + (peek().map { ", found '\($0.text)'" } ?? " at end of line"))
        }
    }

    mutating func word() throws(TextAssemblyError) -> Token {
        guard let token = peek(), token.kind == .word else {
            throw error("expected a name" + (peek().map { ", found '\($0.text)'" } ?? " at end of line"))
        }
        position += 1
        return token
    }

    /// A register, `rN` or `wN`; returns it and whether it was the 32-bit name.
    mutating func register() throws(TextAssemblyError) -> (Register, wide: Bool) {
        let start = column
        guard let token = peek(), token.kind == .word, let parsed = Self.register(token.text) else {
            throw error(
                "expected a register (r0–r10 or w0–w10)" + (peek().map { ", found '\($0.text)'" } ?? ""), at: start)
        }
        position += 1
        return parsed
    }

    static func register(_ text: String) -> (Register, wide: Bool)? {
        guard let first = text.first, first == "r" || first == "w", let n = UInt8(text.dropFirst()), n <= 10 else {
            return nil
        }
        return (Register(rawValue: n), first == "r")
    }

    var nextIsRegister: Bool { peek().map { $0.kind == .word && Self.register($0.text) != nil } ?? false }

    /// A signed number: `5`, `-0x5`, `+0x5`.
    mutating func number() throws(TextAssemblyError) -> Int64 {
        let negative = take("-")
        if !negative { _ = take("+") }
        guard let token = peek(), token.kind == .number else {
            throw error("expected a number" + (peek().map { ", found '\($0.text)'" } ?? " at end of line"))
        }
        position += 1
        return negative ? 0 &- token.value : token.value
    }

    mutating func int32(_ what: String) throws(TextAssemblyError) -> Int32 {
        let start = column
        let value = try number()
        // Accept the signed range and, for hex constants, the unsigned 32-bit range.
        if let v = Int32(exactly: value) { return v }
        if value >= 0 && value <= Int64(UInt32.max) { return Int32(bitPattern: UInt32(value)) }
        throw error("\(what) \(value) does not fit in 32 bits", at: start)
    }

    mutating func int16(_ what: String) throws(TextAssemblyError) -> Int16 {
        let start = column
        let value = try number()
        guard let v = Int16(exactly: value) else {
            throw error("\(what) \(value) does not fit in 16 bits (-32768…32767)", at: start)
        }
        return v
    }

    /// `(uNN *)` or `(sNN *)` → size and whether signed.
    mutating func sizeCast() throws(TextAssemblyError) -> (AccessSize, signed: Bool) {
        try expect("(")
        let start = column
        let name = try word().text
        guard let kind = name.first, kind == "u" || kind == "s", let bits = Int(name.dropFirst()),
            let size = AccessSize(byteCount: bits / 8), bits % 8 == 0
        else { throw error("expected a size u8, u16, u32, u64 (or s8, s16, s32), found '\(name)'", at: start) }
        try expect("*")
        try expect(")")
        return (size, kind == "s")
    }

    /// `(rN + off)` or `(rN - off)`; with `parenthesized: false` the bare `rN + off`.
    mutating func address(parenthesized: Bool = true) throws(TextAssemblyError) -> (Register, Int16) {
        if parenthesized { try expect("(") }
        let (base, _) = try register()
        var offset: Int16 = 0
        if take("+") {
            offset = try int16("offset")
        } else if take("-") {
            let start = column
            let magnitude = try number()
            guard let v = Int16(exactly: -magnitude) else {
                throw error("offset -\(magnitude) does not fit in 16 bits (-32768…32767)", at: start)
            }
            offset = v
        }
        if parenthesized { try expect(")") }
        return (base, offset)
    }

    /// A jump target: a signed offset or a label name.
    mutating func target() throws(TextAssemblyError) -> Either {
        if let token = peek(), token.kind == .word { return .label(Label(try word().text)) }
        return .offset(try number())
    }

    enum Either {
        case offset(Int64)
        case label(Label)
    }

    mutating func end() throws(TextAssemblyError) {
        if let token = peek() { throw error("unexpected '\(token.text)' after the instruction", at: token.column) }
    }

    // MARK: Grammar

    mutating func parseLine() throws(TextAssemblyError) -> [Statement] {
        var result: [Statement] = []
        if let first = peek(), first.kind == .word, peek(1)?.text == ":" {
            position += 2
            result.append(.label(Label(first.text)))
        }
        if atEnd { return result }
        result.append(try parseInstruction())
        try end()
        return result
    }

    mutating func parseInstruction() throws(TextAssemblyError) -> Statement {
        let start = column
        guard let first = peek() else { throw error("expected an instruction") }
        switch first.text {
        case "exit":
            position += 1
            return .instruction(.exit())
        case "goto", "gotol", "may_goto":
            position += 1
            let target = try target()
            switch (first.text, target) {
            case ("goto", .label(let label)): return .ja(to: label)
            case ("gotol", .label(let label)): return .gotol(to: label)
            case (_, .label(let label)): return Statement(kind: .branch(.mayGoto(offset: 0), label))
            case ("gotol", .offset(let value)):
                guard let v = Int32(exactly: value) else {
                    throw error("gotol offset \(value) does not fit in 32 bits")
                }
                return .instruction(.gotol(offset: v))
            case (_, .offset(let value)):
                guard let v = Int16(exactly: value) else {
                    throw error("jump offset \(value) does not fit in 16 bits; use gotol", at: start)
                }
                return .instruction(first.text == "goto" ? .ja(offset: v) : .mayGoto(offset: v))
            }
        case "call":
            position += 1
            return try parseCall()
        case "callx":
            position += 1
            return .instruction(.callx(try register().0))
        case "if":
            position += 1
            return try parseConditional()
        case "lock":
            position += 1
            try expect("*")
            let (size, _) = try sizeCast()
            let (base, offset) = try address()
            let opStart = column
            let operationToken = peek()?.text ?? ""
            position += 1
            let operations: [String: AtomicOperation] = ["+=": .add, "|=": .or, "&=": .and, "^=": .xor]
            guard let operation = operations[operationToken] else {
                throw error("expected +=, |=, &= or ^= after a lock operand", at: opStart)
            }
            return .instruction(.atomic(size, operation, base, try register().0, offset))
        case "*":
            position += 1
            let (size, _) = try sizeCast()
            let (base, offset) = try address()
            try expect("=")
            if nextIsRegister { return .instruction(.stx(size, base, try register().0, offset)) }
            return .instruction(.st(size, base, offset, try int32("immediate")))
        case "store_release":
            position += 1
            try expect("(")
            let (size, _) = try sizeCast()
            let (base, offset) = try address()
            try expect(",")
            let value = try register().0
            try expect(")")
            return .instruction(.storeRelease(size, base, value, offset))
        case "ld_pseudo":
            position += 1
            let dst = try register().0
            try expect(",")
            let sourceStart = column
            let source = try number()
            guard (0...6).contains(source) else { throw error("ld_pseudo source must be 0…6", at: sourceStart) }
            try expect(",")
            let imm = try int32("immediate")
            var next: Int32 = 0
            if take(",") { next = try int32("second immediate") }
            return .instruction(.ldImm64(dst, source: LoadImm64Source(rawValue: UInt8(source)), imm, next: next))
        default:
            guard nextIsRegister else { throw error("unknown instruction '\(first.text)'", at: start) }
            return try parseAssignment()
        }
    }

    mutating func parseCall() throws(TextAssemblyError) -> Statement {
        let start = column
        if let token = peek(), token.kind == .word {
            position += 1
            if let helper = HelperFunction(name: token.text), token.text.hasPrefix("bpf_") {
                return .instruction(.call(helper))
            }
            return .call(Label(token.text))
        }
        let imm = try int32("call target")
        switch annotation {
        case "bpf2bpf": return .instruction(.callLocal(offset: imm))
        case "kfunc": return .instruction(.callKfunc(btfID: imm))
        default:
            _ = start
            return .instruction(.call(HelperFunction(rawValue: imm)))
        }
    }

    mutating func parseConditional() throws(TextAssemblyError) -> Statement {
        let (dst, wide) = try register()
        let opStart = column
        let symbol = peek()?.text ?? ""
        guard let operation = Disassembler.conditionSymbols.first(where: { $0.value == symbol })?.key else {
            throw error("expected a comparison (==, !=, >, >=, <, <=, &, s>, s>=, s<, s<=)", at: opStart)
        }
        position += 1
        var srcRegister: Register?
        var imm: Int32 = 0
        if nextIsRegister {
            let (src, srcWide) = try register()
            guard srcWide == wide else { throw error("both operands must be rN or both wN", at: opStart) }
            srcRegister = src
        } else {
            imm = try int32("immediate")
        }
        try expect("goto")
        let targetStart = column
        let target = try target()
        let template: Instruction
        switch (srcRegister, wide) {
        case (let src?, true): template = .jump(operation, dst, src, offset: 0)
        case (let src?, false): template = .jump32(operation, dst, src, offset: 0)
        case (nil, true): template = .jump(operation, dst, imm, offset: 0)
        case (nil, false): template = .jump32(operation, dst, imm, offset: 0)
        }
        switch target {
        case .label(let label): return Statement(kind: .branch(template, label))
        case .offset(let value):
            guard let v = Int16(exactly: value) else {
                throw error("jump offset \(value) does not fit in 16 bits", at: targetStart)
            }
            var instruction = template
            instruction.offset = v
            return .instruction(instruction)
        }
    }

    mutating func parseAssignment() throws(TextAssemblyError) -> Statement {
        let dstStart = column
        let (dst, wide) = try register()
        let opStart = column
        guard let opToken = peek(), opToken.kind == .symbol else { throw error("expected an operator after \(dst)") }
        position += 1
        let compound: [String: ALUOperation] = [
            "+=": .add, "-=": .sub, "*=": .mul, "/=": .div, "%=": .mod, "|=": .or, "&=": .and,
            "<<=": .lsh, ">>=": .rsh, "s>>=": .arsh, "^=": .xor, "s/=": .div, "s%=": .mod,
        ]
        if let operation = compound[opToken.text] {
            var instruction: Instruction
            if nextIsRegister {
                let (src, srcWide) = try register()
                guard srcWide == wide else { throw error("both operands must be rN or both wN", at: opStart) }
                instruction = .alu(operation, dst, src, is64: wide)
            } else {
                instruction = .alu(operation, dst, try int32("immediate"), is64: wide)
            }
            if opToken.text.hasPrefix("s") && opToken.text != "s>>=" { instruction.offset = 1 }
            return .instruction(instruction)
        }
        guard opToken.text == "=" else { throw error("unknown operator '\(opToken.text)'", at: opStart) }

        // Right-hand sides.
        if take("-") {
            if nextIsRegister {
                let (src, _) = try register()
                guard src == dst else { throw error("negation must be 'rN = -rN'", at: dstStart) }
                return .instruction(.alu(.neg, dst, 0, is64: wide))
            }
            position -= 1
        }
        if take("*") {
            let (size, signed) = try sizeCast()
            if take("skb") {
                guard dst == .r0 else { throw error("packet loads always write r0", at: dstStart) }
                try expect("[")
                let instruction: Instruction
                if nextIsRegister {
                    let (src, _) = try register()
                    var imm: Int32 = 0
                    if take("+") { imm = try int32("offset") } else if take("-") { imm = 0 &- (try int32("offset")) }
                    instruction = .ldInd(size, src, imm)
                } else {
                    instruction = .ldAbs(size, try int32("offset"))
                }
                try expect("]")
                return .instruction(instruction)
            }
            let (base, offset) = try address()
            if signed {
                guard size != .dw else { throw error("there is no sign-extending 64-bit load", at: dstStart) }
                return .instruction(.ldxsx(size, dst, base, offset))
            }
            return .instruction(.ldx(size, dst, base, offset))
        }
        if take("(") {
            let start = column
            let name = try word().text
            guard name.hasPrefix("s"), let bits = Int16(name.dropFirst()), [8, 16, 32].contains(bits) else {
                throw error("expected (s8), (s16) or (s32)", at: start)
            }
            try expect(")")
            let (src, _) = try register()
            return .instruction(wide ? .movsx(dst, src, bits: bits) : .movsx32(dst, src, bits: bits))
        }
        if let token = peek(), token.kind == .word, !nextIsRegister {
            position += 1
            return try parseNamedRight(token, dst: dst, wide: wide)
        }
        if nextIsRegister {
            let (src, srcWide) = try register()
            guard srcWide == wide else { throw error("both operands must be rN or both wN", at: opStart) }
            return .instruction(.alu(.mov, dst, src, is64: wide))
        }
        let valueStart = column
        let value = try number()
        if take("ll") {
            guard wide else { throw error("ld_imm64 needs a 64-bit register", at: dstStart) }
            return .instruction(.ldImm64(dst, value))
        }
        if let v = Int32(exactly: value) { return .instruction(.alu(.mov, dst, v, is64: wide)) }
        if value >= 0 && value <= Int64(UInt32.max) {
            return .instruction(.alu(.mov, dst, Int32(bitPattern: UInt32(value)), is64: wide))
        }
        throw error("immediate \(value) does not fit in 32 bits; write '\(value) ll' for a 64-bit load", at: valueStart)
    }

    mutating func parseNamedRight(_ token: Token, dst: Register, wide: Bool) throws(TextAssemblyError) -> Statement {
        let name = token.text
        for kind in ["be", "le", "bswap"] where name.hasPrefix(kind) {
            guard let bits = Int32(name.dropFirst(kind.count)), [16, 32, 64].contains(bits) else { continue }
            let (src, _) = try register()
            guard src == dst else { throw error("a byte swap works in place: '\(dst) = \(name) \(dst)'") }
            switch kind {
            case "be": return .instruction(.be(dst, bits))
            case "le": return .instruction(.le(dst, bits))
            default: return .instruction(.bswap(dst, bits))
            }
        }
        switch name {
        case "load_acquire":
            try expect("(")
            let (size, _) = try sizeCast()
            let (base, offset) = try address()
            try expect(")")
            return .instruction(.loadAcquire(size, dst, base, offset))
        case "addr_space_cast":
            try expect("(")
            let (src, _) = try register()
            try expect(",")
            let to = try number()
            try expect(",")
            let from = try number()
            try expect(")")
            guard let t = UInt16(exactly: to), let f = UInt16(exactly: from) else {
                throw error("address spaces are 16-bit numbers")
            }
            return .instruction(.addrSpaceCast(dst, src, to: t, from: f))
        case "xchg_64", "xchg32_32", "cmpxchg_64", "cmpxchg32_32":
            let size: AccessSize = name.hasSuffix("_64") ? .dw : .w
            try expect("(")
            let (base, offset) = try address(parenthesized: false)
            try expect(",")
            if name.hasPrefix("cmpxchg") {
                let (r0, _) = try register()
                guard r0 == .r0, dst == .r0 else { throw error("cmpxchg compares with and returns r0") }
                try expect(",")
            }
            let (src, _) = try register()
            try expect(")")
            if name.hasPrefix("xchg") && src != dst { throw error("xchg returns the old value in its source register") }
            return .instruction(.atomic(size, name.hasPrefix("cmp") ? .cmpxchg : .xchg, base, src, offset))
        default:
            let fetches: [String: AtomicOperation] = [
                "atomic_fetch_add": .fetchAdd, "atomic_fetch_or": .fetchOr, "atomic_fetch_and": .fetchAnd,
                "atomic_fetch_xor": .fetchXor,
            ]
            if let operation = fetches[name] {
                try expect("(")
                let (size, _) = try sizeCast()
                let (base, offset) = try address()
                try expect(",")
                let (src, _) = try register()
                try expect(")")
                guard src == dst else { throw error("\(name) returns the old value in its source register") }
                return .instruction(.atomic(size, operation, base, src, offset))
            }
            // `rN = label ll`: the address of a function.
            if take("ll") { return .loadFunction(dst, Label(name)) }
            throw error("unknown operand '\(name)'", at: token.column)
        }
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let c = s.first, set.contains(c) { s = s.dropFirst() }
        while let c = s.last, set.contains(c) { s = s.dropLast() }
        return String(s)
    }
}
extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> String { String(self).trimmingCharacters(in: set) }
}
