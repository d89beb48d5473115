/// A symbolic position in a program: the target of jumps, `gotol` and BPF-to-BPF calls.
///
/// Labels are values: make one, use it as a jump target anywhere, and place it once in the
/// program where it points.
///
/// ```swift
/// let pass = Label("pass")
/// let program = try assemble {
///     Instruction.ldx(.w, .r2, .r1, 60)
///     Statement.jump(.jeq, .r2, 8080, to: pass)
///     Instruction.mov(.r0, 0)
///     Instruction.exit()
///     pass
///     Instruction.mov(.r0, 1)
///     Instruction.exit()
/// }
/// ```
public struct Label: Hashable, Sendable, CustomStringConvertible, ExpressibleByStringLiteral {
    /// The label's name, as printed by the disassembler and in error messages.
    public let name: String
    /// A label called `name`; labels with the same name are the same label.
    public init(_ name: String) { self.name = name }
    /// A label from a string literal: `let pass: Label = "pass"`.
    public init(stringLiteral value: String) { self.name = value }
    /// The label's name.
    public var description: String { name }
}

/// A map named in a program by an `ld_imm64` that the loader resolves to the map's fd.
///
/// The instruction layer knows only the name; the kernel layer attaches its map object in
/// ``object`` so the loader can find the fd without the user handling one.
public struct MapReference: Sendable, CustomStringConvertible {
    /// The name used in messages and to find the map when no object is attached.
    public var name: String
    /// The kernel layer's map object, if any.
    public var object: (any Sendable)?
    /// A reference to the map called `name`, optionally carrying the kernel layer's map object.
    public init(name: String, object: (any Sendable)? = nil) {
        self.name = name
        self.object = object
    }
    /// The map's name.
    public var description: String { name }
}

/// One element of a program being built: an instruction, a label definition, or an
/// instruction whose target is a label or a map still to be resolved.
public struct Statement: Sendable {
    enum Kind: Sendable {
        case instruction(Instruction)
        case label(Label)
        /// A jump, `gotol`, local call or `ld_imm64` of a function, aimed at a label.
        case branch(Instruction, Label)
        case map(Instruction, MapReference)
    }
    let kind: Kind

    /// A plain instruction.
    public static func instruction(_ instruction: Instruction) -> Statement {
        Statement(kind: .instruction(instruction))
    }
    /// Places `label` here: it points at the next instruction.
    public static func label(_ label: Label) -> Statement { Statement(kind: .label(label)) }

    /// `if dst <op> imm goto label` (64-bit).
    public static func jump(_ operation: JumpOperation, _ dst: Register, _ imm: Int32, to label: Label) -> Statement {
        Statement(kind: .branch(.jump(operation, dst, imm, offset: 0), label))
    }
    /// `if dst <op> src goto label` (64-bit).
    public static func jump(_ operation: JumpOperation, _ dst: Register, _ src: Register, to label: Label) -> Statement
    {
        Statement(kind: .branch(.jump(operation, dst, src, offset: 0), label))
    }
    /// `if wdst <op> imm goto label` (32-bit).
    public static func jump32(_ operation: JumpOperation, _ dst: Register, _ imm: Int32, to label: Label) -> Statement {
        Statement(kind: .branch(.jump32(operation, dst, imm, offset: 0), label))
    }
    /// `if wdst <op> wsrc goto label` (32-bit).
    public static func jump32(_ operation: JumpOperation, _ dst: Register, _ src: Register, to label: Label)
        -> Statement
    {
        Statement(kind: .branch(.jump32(operation, dst, src, offset: 0), label))
    }
    /// `goto label` (16-bit offset).
    public static func ja(to label: Label) -> Statement { Statement(kind: .branch(.ja(offset: 0), label)) }
    /// `gotol label` (32-bit offset).
    public static func gotol(to label: Label) -> Statement { Statement(kind: .branch(.gotol(offset: 0), label)) }
    /// A BPF-to-BPF call of the function that starts at `label`.
    public static func call(_ label: Label) -> Statement { Statement(kind: .branch(.callLocal(offset: 0), label)) }
    /// `dst = <address of the function at label>` (`ld_imm64` with `BPF_PSEUDO_FUNC`).
    public static func loadFunction(_ dst: Register, _ label: Label) -> Statement {
        Statement(kind: .branch(.ldImm64(dst, source: .function, 0), label))
    }
    /// `dst = map` (`ld_imm64` with `BPF_PSEUDO_MAP_FD`); the loader puts in the map's fd.
    public static func loadMap(_ dst: Register, _ map: MapReference) -> Statement {
        Statement(kind: .map(.ldImm64(dst, source: .mapFD, 0), map))
    }
    /// `dst = &map_value[0] + offset` (`ld_imm64` with `BPF_PSEUDO_MAP_VALUE`) for array maps.
    public static func loadMapValue(_ dst: Register, _ map: MapReference, offset: Int32 = 0) -> Statement {
        Statement(kind: .map(.ldImm64(dst, source: .mapValue, 0, next: offset), map))
    }
}

/// An assembled program: instructions with every label resolved, the label positions kept for
/// messages, and the map references still to be resolved by the loader.
public struct Assembly: Sendable {
    /// The instructions, label targets patched in.
    public var instructions: [Instruction]
    /// Where each label points, in 8-byte slots (the unit the kernel counts in).
    public var labelSlots: [Label: Int]
    /// The `ld_imm64` instructions that name a map, by instruction index.
    public var mapReferences: [(instructionIndex: Int, map: MapReference)]

    /// Makes an assembly of plain instructions, with no labels or maps.
    public init(_ instructions: [Instruction]) {
        self.instructions = instructions
        self.labelSlots = [:]
        self.mapReferences = []
    }

    /// Assembles the statements built by the closure; see ``assemble(_:)-(()->[Statement])``.
    public init(@ProgramBuilder _ body: () throws -> [Statement]) throws {
        self = try BPFAssembly.assemble(try body())
    }

    /// The wire encoding.
    public func encoded(byteOrder: ByteOrder = .host) -> [UInt8] { instructions.encoded(byteOrder: byteOrder) }

    /// The label at or before a slot, with the distance from it: `("pass", 2)` reads `pass+2`.
    /// Used to say where in the source a kernel message (which counts slots) points.
    public func nearestLabel(atOrBefore slot: Int) -> (label: Label, distance: Int)? {
        labelSlots.filter { $0.value <= slot }
            .max { ($0.value, $1.key.name) < ($1.value, $0.key.name) }
            .map { ($0.key, slot - $0.value) }
    }

    /// The index of the instruction that occupies `slot`, if one starts there.
    public func instructionIndex(atSlot slot: Int) -> Int? {
        var position = 0
        for (index, instruction) in instructions.enumerated() {
            if position == slot { return index }
            if position > slot { return nil }
            position += instruction.slotCount
        }
        return nil
    }
}

/// Why statements did not assemble.
public struct AssemblyError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong with the label.
    public enum Reason: Hashable, Sendable {
        /// A jump or call names a label that is never placed.
        case undefinedLabel
        /// The label is placed twice; `firstSlot` is where it was placed first.
        case duplicateLabel(firstSlot: Int)
        /// The label is further than the instruction's offset field can reach.
        case offsetOutOfRange(offset: Int)
    }
    /// The label concerned.
    public var label: Label
    /// The index of the instruction that refers to the label (or, for a duplicate, the index
    /// of the instruction the second placement points at).
    public var instructionIndex: Int
    /// What went wrong with the label.
    public var reason: Reason

    /// One sentence such as `instruction 3 refers to label 'pass', which is never placed`.
    public var description: String {
        switch reason {
        case .undefinedLabel:
            return "instruction \(instructionIndex) refers to label '\(label)', which is never placed"
        case .duplicateLabel(let first):
            return "label '\(label)' is placed twice: at slot \(first) and again before instruction \(instructionIndex)"
        case .offsetOutOfRange(let offset):
            return "instruction \(instructionIndex) cannot reach label '\(label)': offset \(offset) does not fit"
                + " a 16-bit jump (use gotol for long jumps)"
        }
    }
}

/// Assembles statements: places labels and resolves every jump, `gotol` and local call to
/// its label, with offset = target − pc − 1 counted in slots (`ld_imm64` takes two).
///
/// - Throws: ``AssemblyError`` for an undefined, duplicate or out-of-range label.
public func assemble(_ statements: [Statement]) throws(AssemblyError) -> Assembly {
    var instructions: [Instruction] = []
    var slots: [Label: Int] = [:]
    var pending: [(index: Int, slot: Int, label: Label)] = []
    var maps: [(instructionIndex: Int, map: MapReference)] = []
    var slot = 0
    instructions.reserveCapacity(statements.count)
    for statement in statements {
        switch statement.kind {
        case .label(let label):
            if let first = slots[label] {
                throw AssemblyError(
                    label: label, instructionIndex: instructions.count, reason: .duplicateLabel(firstSlot: first))
            }
            slots[label] = slot
            continue
        case .instruction(let instruction):
            instructions.append(instruction)
        case .branch(let instruction, let label):
            pending.append((instructions.count, slot, label))
            instructions.append(instruction)
        case .map(let instruction, let map):
            maps.append((instructions.count, map))
            instructions.append(instruction)
        }
        slot += instructions[instructions.count - 1].slotCount
    }
    for (index, pc, label) in pending {
        guard let target = slots[label] else {
            throw AssemblyError(label: label, instructionIndex: index, reason: .undefinedLabel)
        }
        let distance = target - pc - 1
        var instruction = instructions[index]
        let isShortJump =
            (instruction.instructionClass == .jmp || instruction.instructionClass == .jmp32)
            && instruction.opcode & 0xf0 != JumpOperation.call.rawValue
            && !(instruction.instructionClass == .jmp32 && instruction.opcode & 0xf0 == JumpOperation.ja.rawValue)
        if isShortJump {
            guard let offset = Int16(exactly: distance) else {
                throw AssemblyError(label: label, instructionIndex: index, reason: .offsetOutOfRange(offset: distance))
            }
            instruction.offset = offset
        } else {
            guard let imm = Int32(exactly: distance) else {
                throw AssemblyError(label: label, instructionIndex: index, reason: .offsetOutOfRange(offset: distance))
            }
            instruction.immediate = imm
        }
        instructions[index] = instruction
    }
    var assembly = Assembly(instructions)
    assembly.labelSlots = slots
    assembly.mapReferences = maps
    return assembly
}

/// Assembles the program written in the closure, the way the guide's `assemble` does.
///
/// ```swift
/// let program = try assemble {
///     Instruction.mov(.r0, 1)
///     Instruction.exit()
/// }
/// ```
public func assemble(@ProgramBuilder _ body: () throws -> [Statement]) throws -> Assembly {
    try assemble(try body())
}

/// The result builder behind ``assemble(_:)-(()->[Statement])``: instructions, labels,
/// statements and arrays of them, with Swift `if`, `switch` and `for` evaluated while building.
@resultBuilder
public enum ProgramBuilder {
    /// An instruction becomes one plain statement.
    public static func buildExpression(_ instruction: Instruction) -> [Statement] { [.instruction(instruction)] }
    /// A statement is used as is.
    public static func buildExpression(_ statement: Statement) -> [Statement] { [statement] }
    /// A bare label places the label here.
    public static func buildExpression(_ label: Label) -> [Statement] { [.label(label)] }
    /// An array of statements is spliced in.
    public static func buildExpression(_ statements: [Statement]) -> [Statement] { statements }
    /// An array of instructions is spliced in as plain statements.
    public static func buildExpression(_ instructions: [Instruction]) -> [Statement] {
        instructions.map(Statement.instruction)
    }
    /// Concatenates the statements of a block in order.
    public static func buildBlock(_ parts: [Statement]...) -> [Statement] { parts.flatMap { $0 } }
    /// An `if` without `else`: its statements, or none.
    public static func buildOptional(_ part: [Statement]?) -> [Statement] { part ?? [] }
    /// The first branch of an `if`/`else` or `switch`.
    public static func buildEither(first: [Statement]) -> [Statement] { first }
    /// The second branch of an `if`/`else` or `switch`.
    public static func buildEither(second: [Statement]) -> [Statement] { second }
    /// A `for` loop: the statements of every iteration, in order.
    public static func buildArray(_ parts: [[Statement]]) -> [Statement] { parts.flatMap { $0 } }
    /// An `if #available` block: its statements as they are.
    public static func buildLimitedAvailability(_ part: [Statement]) -> [Statement] { part }
}
