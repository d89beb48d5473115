import ArgumentParser
import BPFAssembly
import Foundation

struct Disasm: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print raw eBPF instruction bytes in LLVM's BPF assembly syntax.",
        discussion: """
            FILE holds raw instructions, as `llvm-objcopy -O binary --only-section=SECTION obj.o FILE`
            writes them. One instruction per line (an ld_imm64 is one line), as llvm-objdump prints it.
            """
    )

    @Argument(help: "The file of raw instruction bytes.")
    var file: String

    @Flag(help: "Name jump targets (LBB<slot>:) and helpers (call bpf_sk_assign).")
    var symbolic = false

    @Flag(help: "Print exactly what llvm-objdump prints: no '# bpf2bpf' / '# kfunc' annotations.")
    var llvm = false

    @Flag(help: "Read big-endian instructions (default: this machine's order).")
    var bigEndian = false

    func run() throws {
        try reporting {
            let bytes = try readFile(file)
            let instructions: [Instruction]
            do {
                instructions = try Instruction.decode(bytes, byteOrder: bigEndian ? .big : .host)
            } catch let error as DecodingError {
                throw ToolError("\(file): \(error.description)")
            }
            if symbolic {
                print(Disassembler.symbolic(for: instructions).listing(instructions), terminator: "")
            } else {
                for line in Disassembler(llvmCompatible: llvm).lines(instructions) { print(line) }
            }
        }
    }
}

struct Asm: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Assemble LLVM BPF assembly text into raw instruction bytes.",
        discussion: "Reads the syntax `sksteer disasm` and llvm-objdump print; labels (`name:`) are allowed."
    )

    @Argument(help: "The assembly source file.")
    var file: String

    @Option(name: .shortAndLong, help: "Where to write the raw bytes.")
    var output: String

    @Flag(help: "Write big-endian instructions (default: this machine's order).")
    var bigEndian = false

    func run() throws {
        try reporting {
            let data = try readFile(file)
            guard let source = String(data: data, encoding: .utf8) else {
                throw ToolError("\(file): not UTF-8 text")
            }
            let assembly: Assembly
            do {
                assembly = try TextAssembler.assemble(source)
            } catch let error as TextAssemblyError {
                throw ToolError("\(file):\(error.line):\(error.column): \(error.message)")
            }
            let bytes = assembly.encoded(byteOrder: bigEndian ? .big : .host)
            do {
                try Data(bytes).write(to: URL(fileURLWithPath: output))
            } catch {
                throw ToolError("\(output): cannot write: \((error as NSError).localizedDescription)")
            }
        }
    }
}
