import Testing

@testable import BPFAssembly

/// Every instruction form the set defines, built through the public factories.
let everyForm: [Instruction] = {
    var forms: [Instruction] = []
    let operations: [ALUOperation] = [.add, .sub, .mul, .div, .or, .and, .lsh, .rsh, .mod, .xor, .mov, .arsh]
    for is64 in [true, false] {
        for operation in operations {
            forms.append(.alu(operation, .r1, -7, is64: is64))
            forms.append(.alu(operation, .r2, .r3, is64: is64))
        }
    }
    forms += [
        .neg(.r1), .neg32(.r2), .sdiv(.r1, 3), .sdiv(.r1, .r2), .smod(.r1, -3), .smod(.r1, .r4),
        .sdiv32(.r1, 3), .sdiv32(.r1, .r2), .smod32(.r1, 5), .smod32(.r1, .r9),
        .movsx(.r1, .r2, bits: 8), .movsx(.r1, .r2, bits: 16), .movsx(.r1, .r2, bits: 32),
        .movsx32(.r1, .r2, bits: 8), .movsx32(.r1, .r2, bits: 16), .addrSpaceCast(.r1, .r2, to: 1, from: 0),
    ]
    for bits: Int32 in [16, 32, 64] { forms += [.be(.r1, bits), .le(.r2, bits), .bswap(.r3, bits)] }
    for operation in JumpOperation.conditions {
        forms += [
            .jump(operation, .r1, 42, offset: 3), .jump(operation, .r1, .r2, offset: -3),
            .jump32(operation, .r1, -42, offset: 0), .jump32(operation, .r1, .r2, offset: 7),
        ]
    }
    forms += [
        .ja(offset: -1), .gotol(offset: 70_000), .mayGoto(offset: 2), .call(.skAssign), .callLocal(offset: -5),
        .callKfunc(btfID: 1234), .callx(.r3), .exit(),
    ]
    for size in AccessSize.allCases {
        forms += [.ldx(size, .r1, .r2, -8), .stx(size, .r10, .r1, -16), .st(size, .r10, 4, -1)]
        forms += [.loadAcquire(size, .r0, .r1, 8), .storeRelease(size, .r1, .r2, -8)]
        if size != .dw { forms += [.ldxsx(size, .r3, .r10, -1), .ldAbs(size, 12), .ldInd(size, .r1, 4)] }
    }
    for size in [AccessSize.w, .dw] {
        for operation in AtomicOperation.allCases where operation != .loadAcquire && operation != .storeRelease {
            forms.append(.atomic(size, operation, .r1, operation == .cmpxchg ? .r2 : .r2, 16))
        }
    }
    forms += [.ldImm64(.r1, 0x1234_5678_9abc_def0 as UInt64), .ldImm64(.r2, -1 as Int64), .ldImm64(.r3, 0 as UInt64)]
    for source in LoadImm64Source.allCases where source != .constant {
        forms.append(.ldImm64(.r1, source: source, 7, next: source == .mapValue ? 8 : 0))
    }
    return forms
}()

struct InstructionTests {
    @Test func everyFormIsValid() {
        for form in everyForm { #expect(form.isValid, "\(form)") }
    }

    @Test func everyFormRoundTripsThroughBytes() throws {
        for order in [ByteOrder.little, .big] {
            let bytes = everyForm.encoded(byteOrder: order)
            #expect(bytes.count == everyForm.slotCount * 8)
            #expect(try Instruction.decode(bytes, byteOrder: order) == everyForm)
        }
    }

    @Test func everyFormRoundTripsThroughText() throws {
        let text = Disassembler().lines(everyForm)
        for (form, line) in zip(everyForm, text) {
            let back = try TextAssembler.assemble(line)
            #expect(back.instructions == [form], "\(line)")
        }
    }

    @Test func wireLayoutMatchesTheKernel() {
        // r1 = *(u32 *)(r6 + 60): opcode 0x61, dst 1, src 6 in the high nibble (little endian).
        #expect(Instruction.ldx(.w, .r1, .r6, 60).encoded(byteOrder: .little) == [0x61, 0x61, 0x3c, 0, 0, 0, 0, 0])
        #expect(Instruction.call(.skAssign).encoded(byteOrder: .little) == [0x85, 0, 0, 0, 0x7c, 0, 0, 0])
        #expect(
            Instruction.ldImm64(.r1, 0x1122_3344_5566_7788 as UInt64).encoded(byteOrder: .little)
                == [0x18, 1, 0, 0, 0x88, 0x77, 0x66, 0x55, 0, 0, 0, 0, 0x44, 0x33, 0x22, 0x11])
        #expect(Instruction.mov(.r1, .r2).encoded(byteOrder: .big) == [0xbf, 0x12, 0, 0, 0, 0, 0, 0])
    }

    @Test func decodeErrorsNameTheInstruction() {
        func reason(_ bytes: [UInt8]) -> DecodingError? {
            do {
                _ = try Instruction.decode(bytes, byteOrder: .little)
                return nil
            } catch { return error }
        }
        let exit: [UInt8] = [0x95, 0, 0, 0, 0, 0, 0, 0]
        let wide: [UInt8] = [0x18, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]

        let unknown = reason(wide + exit + [0xff, 0, 0, 0, 0, 0, 0, 0])
        #expect(unknown?.index == 2)
        #expect(unknown?.byteOffset == 24)
        #expect(unknown?.reason == .unknownOpcode(0xff))
        #expect(unknown?.description.contains("instruction 2") == true)

        #expect(reason(exit + [0xbf, 0x0b, 0, 0, 0, 0, 0, 0])?.reason == .invalidRegister(field: "dst", value: 11))
        #expect(reason(exit + Array(wide.prefix(8)))?.reason == .truncatedLoadImm64)
        #expect(reason(exit + [0x95, 0, 0])?.reason == .truncated(remainder: 3))
        #expect(reason([0x95, 0, 0, 0, 1, 0, 0, 0])?.reason == .reservedField(field: "immediate", value: 1))
        #expect(reason([0xbf, 0x21, 0, 0, 5, 0, 0, 0])?.reason == .reservedField(field: "immediate", value: 5))
        #expect(reason([0x07, 0x21, 0, 0, 5, 0, 0, 0])?.reason == .reservedField(field: "src", value: 2))
        #expect(
            reason([0x18, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0])?.reason
                == .reservedField(field: "second slot dst", value: 2))
        #expect(reason([0xd4, 1, 0, 0, 8, 0, 0, 0])?.reason == .reservedField(field: "immediate", value: 8))
        #expect(reason([0x85, 0x30, 0, 0, 1, 0, 0, 0])?.reason == .reservedField(field: "src (call kind)", value: 3))
        #expect(reason([0x99, 0, 0, 0, 0, 0, 0, 0])?.reason == .unknownOpcode(0x99))
        #expect(reason([]) == nil)
    }

    @Test func helperCatalogue() {
        #expect(HelperFunction.skAssign.rawValue == 124)
        #expect(HelperFunction.skRelease.rawValue == 86)
        #expect(HelperFunction.skLookupTcp.rawValue == 84)
        #expect(HelperFunction.skLookupUdp.rawValue == 85)
        #expect(HelperFunction.mapLookupElem.rawValue == 1)
        #expect(HelperFunction(name: "bpf_sk_assign") == .skAssign)
        #expect(HelperFunction(name: "sk_release") == .skRelease)
        #expect(HelperFunction(name: "no_such_helper") == nil)
        #expect(HelperFunction(rawValue: 9999).description == "helper#9999")
        #expect(HelperFunction.all.count >= 211)
    }
}
