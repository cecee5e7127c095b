// Where the Python runtime's goldens are: tests/test_web.py writes them and sets FER_WEB_GOLDENS.
import fs from "node:fs";
import path from "node:path";

export const GOLDENS = process.env.FER_WEB_GOLDENS;
if (!GOLDENS) {
  throw new Error("FER_WEB_GOLDENS is not set: run python -m pytest tests/test_web.py, which writes the goldens");
}

export const readJson = (name) => JSON.parse(fs.readFileSync(path.join(GOLDENS, name), "utf8"));
export const readText = (name) => fs.readFileSync(path.join(GOLDENS, name), "utf8");
