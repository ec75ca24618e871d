// Tests for host/dataset: every layout on small generated trees, sorted order, KSDD2 labels
// from masks, list files, and each refusal (missing folders, empty train, bad files, masks).
// Suite names start in lower case so that ctest -R "image|resize|dataset|contamination"
// (a case-sensitive regex) selects them.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "expect_error.h"
#include "core/error.h"
#include "host/dataset.h"
#include "host/image.h"
#include "host/thread_pool.h"

#include "temp_dir.h"
namespace fs = std::filesystem;
using namespace mirad;

namespace {

// A fresh directory per test, named for this suite.
class TempDir : public mirad::test::TempDir {
 public:
  TempDir() : mirad::test::TempDir("mirad_dataset") {}
};

// A w x h gray PNG whose pixels are all `value`, creating parent folders.
void write_png(const fs::path& p, int w, int h, uint8_t value = 100) {
  fs::create_directories(p.parent_path());
  Image im(h, w, 1);
  std::fill(im.u8(), im.u8() + im.numel(), value);
  encode_png(p, im, /*sync=*/false);  // throwaway files: no need to wait for the disk
}

void write_text(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

using mirad::test::expect_input_error;

std::vector<std::string> rel_paths(const std::vector<Item>& items, const fs::path& root) {
  std::vector<std::string> out;
  for (const Item& it : items) out.push_back(it.path.lexically_relative(root).generic_string());
  return out;
}

// A small MVTec AD category. Files are created out of order on purpose.
fs::path make_mvtec(const TempDir& dir) {
  const fs::path c = dir / "bottle";
  for (const char* n : {"002.png", "000.png", "001.png"}) write_png(c / "train/good" / n, 8, 6);
  for (const char* n : {"001.png", "000.png"}) write_png(c / "test/good" / n, 8, 6);
  for (const char* n : {"001.png", "000.png"}) {
    write_png(c / "test/scratch" / n, 8, 6);
    write_png(c / "ground_truth/scratch" / (fs::path(n).stem().string() + "_mask.png"), 8, 6, 255);
  }
  write_png(c / "test/crack/000.png", 8, 6);
  write_png(c / "ground_truth/crack/000_mask.png", 8, 6, 255);
  // Clutter a real download has, which must be ignored.
  write_text(c / "train/good/.DS_Store", "x");
  write_text(c / "license.txt", "CC BY-NC-SA 4.0");
  write_text(c / "test/scratch/notes.txt", "not an image");
  return c;
}

}  // namespace

TEST(dataset, MvtecLayout) {
  TempDir dir;
  const fs::path c = make_mvtec(dir);
  Dataset d = load_mvtec(c);
  EXPECT_EQ(d.layout, "mvtec");
  EXPECT_EQ(
      rel_paths(d.train, c),
      (std::vector<std::string>{"train/good/000.png", "train/good/001.png", "train/good/002.png"}));
  EXPECT_EQ(
      rel_paths(d.test, c),
      (std::vector<std::string>{"test/crack/000.png", "test/good/000.png", "test/good/001.png",
                                "test/scratch/000.png", "test/scratch/001.png"}));
  for (const Item& it : d.train) {
    EXPECT_EQ(it.label, Label::good);
    EXPECT_EQ(it.defect_type, "good");
    EXPECT_TRUE(it.mask_path.empty());
  }
  EXPECT_EQ(d.test[0].label, Label::defect);
  EXPECT_EQ(d.test[0].defect_type, "crack");
  EXPECT_EQ(d.test[0].mask_path, c / "ground_truth/crack/000_mask.png");
  EXPECT_EQ(d.test[1].label, Label::good);
  EXPECT_TRUE(d.test[1].mask_path.empty());
  EXPECT_EQ(d.test[4].defect_type, "scratch");
  EXPECT_EQ(d.test[4].mask_path, c / "ground_truth/scratch/001_mask.png");
  EXPECT_EQ(d.count(d.test, Label::defect), 3u);
  EXPECT_EQ(d.count(d.test, Label::good), 2u);
  EXPECT_NO_THROW(d.validate());
  ThreadPool pool(2);
  EXPECT_NO_THROW(d.validate(&pool));

  // Through the name dispatch, the same thing.
  EXPECT_EQ(load_dataset("mvtec", c).test, d.test);
  expect_input_error([&] { load_dataset("mvtek", c); }, "unknown dataset layout", "mvtek");
}

TEST(dataset, MvtecWithoutGroundTruthHasNoMasks) {
  TempDir dir;
  const fs::path c = make_mvtec(dir);
  fs::remove_all(c / "ground_truth");
  Dataset d = load_mvtec(c);
  for (const Item& it : d.test) EXPECT_TRUE(it.mask_path.empty());
}

TEST(dataset, MvtecRefusals) {
  TempDir dir;
  const fs::path c = make_mvtec(dir);
  // A missing mask, when the class does have a ground-truth folder.
  fs::remove(c / "ground_truth/scratch/001_mask.png");
  expect_input_error([&] { load_mvtec(c); }, (c / "ground_truth/scratch/001_mask.png").string(),
                     "missing mask");
  write_png(c / "ground_truth/scratch/001_mask.png", 8, 6, 255);

  // Missing folders.
  expect_input_error([&] { load_mvtec(dir / "nope"); }, (dir / "nope").string(), "missing folder");
  fs::rename(c / "test", c / "test_off");
  expect_input_error([&] { load_mvtec(c); }, (c / "test").string(), "missing folder");
  fs::rename(c / "test_off", c / "test");

  // Empty training set.
  for (const char* n : {"000.png", "001.png", "002.png"}) fs::remove(c / "train/good" / n);
  expect_input_error([&] { load_mvtec(c); }, c.string(), "empty training set");
}

TEST(dataset, ValidateReportsEveryProblem) {
  TempDir dir;
  const fs::path c = make_mvtec(dir);
  write_png(c / "ground_truth/scratch/000_mask.png", 9, 6, 255);  // wrong width
  write_text(c / "test/good/001.png", "garbage, not a png");      // not an image
  Dataset d = load_mvtec(c);
  try {
    d.validate();
    FAIL() << "validate passed a broken dataset";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("2 of 8 items"), std::string::npos) << msg;
    EXPECT_NE(msg.find((c / "ground_truth/scratch/000_mask.png").string() + ": mask is 9x6"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find((c / "test/good/001.png").string() + ": not an image"), std::string::npos)
        << msg;
  }
  // The same check, lazily, for one item.
  expect_input_error([&] { validate_item(d.test[3]); }, "mask is 9x6 but its image",
                     (c / "test/scratch/000.png").string());
  EXPECT_NO_THROW(validate_item(d.test[4]));
  // An image deleted after loading is reported too.
  fs::remove(c / "train/good/001.png");
  expect_input_error([&] { d.validate(); }, (c / "train/good/001.png").string(), "not a readable");
}

TEST(dataset, Ksdd2LabelsComeFromMasks) {
  TempDir dir;
  const fs::path r = dir / "ksdd2";
  write_png(r / "train/10001.png", 6, 12);
  write_png(r / "train/10001_GT.png", 6, 12, 0);
  write_png(r / "train/10000.png", 6, 12);
  {
    // One non-zero pixel in an otherwise empty mask makes a defect.
    Image m(12, 6, 1);
    m.u8()[40] = 1;
    encode_png(r / "train/10000_GT.png", m);
  }
  write_png(r / "test/20001.png", 6, 12);
  write_png(r / "test/20001_GT.png", 6, 12, 255);
  write_png(r / "test/20000.png", 6, 12);
  write_png(r / "test/20000_GT.png", 6, 12, 0);

  for (int with_pool = 0; with_pool < 2; ++with_pool) {
    ThreadPool pool(2);
    Dataset d = load_ksdd2(r, with_pool ? &pool : nullptr);
    EXPECT_EQ(d.layout, "ksdd2");
    ASSERT_EQ(rel_paths(d.train, r),
              (std::vector<std::string>{"train/10000.png", "train/10001.png"}));
    ASSERT_EQ(rel_paths(d.test, r), (std::vector<std::string>{"test/20000.png", "test/20001.png"}));
    EXPECT_EQ(d.train[0].label, Label::defect);
    EXPECT_EQ(d.train[0].defect_type, "defect");
    EXPECT_EQ(d.train[1].label, Label::good);
    EXPECT_EQ(d.train[1].defect_type, "good");
    EXPECT_EQ(d.test[0].label, Label::good);
    EXPECT_EQ(d.test[1].label, Label::defect);
    // Good images keep their (empty) mask: pixel metrics need it.
    EXPECT_EQ(d.train[1].mask_path, r / "train/10001_GT.png");
    EXPECT_NO_THROW(d.validate());
  }

  write_png(r / "test/20002.png", 6, 12);
  expect_input_error([&] { load_ksdd2(r); }, (r / "test/20002.png").string(),
                     "image without its mask");
  fs::remove(r / "test/20002.png");
  write_png(r / "test/20003_GT.png", 6, 12, 0);
  expect_input_error([&] { load_ksdd2(r); }, (r / "test/20003_GT.png").string(),
                     "mask without its image");
  fs::remove(r / "test/20003_GT.png");
  write_text(r / "train/10001_GT.png", "not a png");
  expect_input_error([&] { load_ksdd2(r); }, (r / "train/10001_GT.png").string(), "not an image");
  write_png(r / "train/10001_GT.png", 6, 12, 0);
  fs::remove_all(r / "test");
  expect_input_error([&] { load_ksdd2(r); }, (r / "test").string(), "missing folder");
}

TEST(dataset, PlainFolderSingleSplit) {
  TempDir dir;
  const fs::path r = dir / "parts";
  write_png(r / "good/b.png", 5, 5);
  write_png(r / "good/a.jpg.png", 5, 5);
  write_png(r / "good/c.PNG", 5, 5);
  write_png(r / "dent/x.png", 5, 5);
  write_png(r / "ground_truth/dent/x_mask.png", 5, 5, 255);
  Dataset d = load_folder(r);
  EXPECT_EQ(d.layout, "folder");
  EXPECT_EQ(rel_paths(d.train, r),
            (std::vector<std::string>{"dent/x.png", "good/a.jpg.png", "good/b.png", "good/c.PNG"}));
  EXPECT_TRUE(d.test.empty());
  EXPECT_EQ(d.train[0].label, Label::defect);
  EXPECT_EQ(d.train[0].defect_type, "dent");
  EXPECT_EQ(d.train[0].mask_path, r / "ground_truth/dent/x_mask.png");
  EXPECT_EQ(d.count(d.train, Label::good), 3u);
  EXPECT_NO_THROW(d.validate());

  write_png(r / "stray.png", 5, 5);
  expect_input_error([&] { load_folder(r); }, (r / "stray.png").string(), "outside good/");
  fs::remove(r / "stray.png");
  fs::remove_all(r / "good");
  expect_input_error([&] { load_folder(r); }, (r / "good").string(), "missing folder");
  fs::create_directories(r / "good");
  fs::remove_all(r / "dent");
  expect_input_error([&] { load_folder(r); }, r.string(), "empty training set");
}

TEST(dataset, PlainFolderTrainTest) {
  TempDir dir;
  const fs::path r = dir / "line3";
  write_png(r / "train/good/1.png", 5, 5);
  write_png(r / "train/good/0.png", 5, 5);
  write_png(r / "test/good/0.png", 5, 5);
  write_png(r / "test/hole/0.png", 5, 5);
  Dataset d = load_folder(r);
  EXPECT_EQ(rel_paths(d.train, r),
            (std::vector<std::string>{"train/good/0.png", "train/good/1.png"}));
  EXPECT_EQ(rel_paths(d.test, r), (std::vector<std::string>{"test/good/0.png", "test/hole/0.png"}));
  EXPECT_EQ(d.test[1].label, Label::defect);
  EXPECT_EQ(d.test[1].defect_type, "hole");
  EXPECT_EQ(load_dataset("folder", r).train, d.train);
}

TEST(dataset, ListFiles) {
  TempDir dir;
  write_png(dir / "imgs/b.png", 4, 4);
  write_png(dir / "imgs/a.png", 4, 4);
  write_png(dir / "imgs/c.png", 4, 4);
  write_png(dir / "masks/c.png", 4, 4, 255);
  write_png(dir / "other/d.png", 4, 4);
  const fs::path list = dir / "train.txt";
  write_text(list,
             "# training images\n"
             "imgs/b.png\n"
             "\n"
             "  imgs/a.png , good\n"
             "imgs/c.png,defect,scratch,masks/c.png\n" +
                 (dir / "other/d.png").string() + ",1\n");
  write_text(dir / "test.txt", "imgs/c.png, anomaly\n");
  Dataset d = load_list(list, dir / "test.txt");
  EXPECT_EQ(d.layout, "list");
  EXPECT_EQ(d.root, dir.path());
  ASSERT_EQ(rel_paths(d.train, dir.path()),
            (std::vector<std::string>{"imgs/a.png", "imgs/b.png", "imgs/c.png", "other/d.png"}));
  EXPECT_EQ(d.train[0].label, Label::good);
  EXPECT_EQ(d.train[1].label, Label::good);  // no label: nominally good
  EXPECT_EQ(d.train[2].label, Label::defect);
  EXPECT_EQ(d.train[2].defect_type, "scratch");
  EXPECT_EQ(d.train[2].mask_path, dir / "masks/c.png");
  EXPECT_EQ(d.train[3].label, Label::defect);
  EXPECT_EQ(d.train[3].defect_type, "defect");
  ASSERT_EQ(d.test.size(), 1u);
  EXPECT_EQ(d.test[0].label, Label::defect);
  EXPECT_NO_THROW(d.validate());

  const fs::path bad = dir / "bad.txt";
  write_text(bad, "imgs/a.png\n# ok so far\nimgs/missing.png\n");
  expect_input_error([&] { load_list(bad); }, bad.string() + ":3", "missing.png: no such file");
  write_text(bad, "imgs/a.png,maybe\n");
  expect_input_error([&] { load_list(bad); }, bad.string() + ":1", "unknown label 'maybe'");
  write_text(bad, "imgs/a.png\n./imgs/a.png\n");
  expect_input_error([&] { load_list(bad); }, bad.string() + ":2", "listed twice");
  write_text(bad, "# nothing\n\n");
  expect_input_error([&] { load_list(bad); }, bad.string(), "empty training set");
  expect_input_error([&] { load_list(dir / "absent.txt"); }, (dir / "absent.txt").string(),
                     "cannot open");
}

TEST(dataset, LabelParsing) {
  EXPECT_EQ(parse_label(" Good "), Label::good);
  EXPECT_EQ(parse_label("NG"), Label::defect);
  EXPECT_EQ(parse_label("0"), Label::good);
  EXPECT_EQ(parse_label("anomaly"), Label::defect);
  EXPECT_STREQ(label_name(Label::defect), "defect");
  EXPECT_THROW(parse_label("2"), InputError);
  EXPECT_TRUE(has_image_extension("a/b.JPEG"));
  EXPECT_FALSE(has_image_extension("a/b.bmp"));
}
