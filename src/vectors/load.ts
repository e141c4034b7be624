import { type PersonaVectors, readVectors } from "./format.js";
import { ptToVectors } from "./interop/torch.js";

/** Reads a vectors file, converting a reference implementation `.pt` file on the fly. */
export async function loadVectorsFile(path: string): Promise<PersonaVectors> {
  return /\.pt$/i.test(path) ? ptToVectors(path) : readVectors(path);
}
