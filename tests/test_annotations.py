"""Importing detection annotations: DOTA, VOC/DIOR, DIOR-R, FAIR1M, HRSC2016 and CSV files written here in
each dataset's published layout, read back as annotations and as GeoPackage box layers (fiona, and QGIS
for the pixel-space convention). Expected corners and map positions are worked out by hand.
"""
from __future__ import annotations

import math
import os
import warnings

import fiona
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

import support
from samrs.samrs_qgis.annotations import (DATASET_CLASSES, PIXEL_SPACE, dataset_classes, detect_format,
                                          find_annotation_file, import_annotations, pixel_to_map_transform,
                                          read_annotation_file, write_box_layer)
from samrs.samrs_qgis.errors import InputError

UTM_T = Affine(0.5, 0.0, 600000.0, 0.0, -0.5, 3300000.0)  # 0.5 m pixels, EPSG:32617

DOTA_V1 = """imagesource:GoogleEarth
gsd:0.146343590398
2753.0 2408.0 2861.0 2385.0 2888.0 2468.0 2805.0 2502.0 plane 0
3445.0 3391.0 3484.0 3409.0 3478.0 3422.0 3437.0 3402.0 large-vehicle 1
913.0 1020.0 930.0 1020.0 930.0
1012.0 622.0 1049.0 622.0 1049.0 abc 1012.0 648.0 small-vehicle 0
500 500 520 500 540 500 560 500 ship 0
10 20 40 20 40 35 10 35 small-vehicle
"""

DOTA_V2 = """10 20 40 20 40 35 10 35 helipad 0
100 100 160 100 160 130 100 130 container-crane 1
200 50 260 50 260 90 200 90 airport 0
"""

DIOR = """<annotation>
\t<filename>00001.jpg</filename>
\t<source>
\t\t<database>DIOR</database>
\t</source>
\t<size>
\t\t<width>800</width>
\t\t<height>800</height>
\t\t<depth>3</depth>
\t</size>
\t<segmented>0</segmented>
\t<object>
\t\t<name>golffield</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>0</truncated>
\t\t<difficult>0</difficult>
\t\t<bndbox>
\t\t\t<xmin>133</xmin>
\t\t\t<ymin>237</ymin>
\t\t\t<xmax>684</xmax>
\t\t\t<ymax>672</ymax>
\t\t</bndbox>
\t</object>
\t<object>
\t\t<name>Expressway-Service-area</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>1</truncated>
\t\t<difficult>1</difficult>
\t\t<bndbox>
\t\t\t<xmin>20</xmin>
\t\t\t<ymin>30</ymin>
\t\t\t<xmax>120.5</xmax>
\t\t\t<ymax>90</ymax>
\t\t</bndbox>
\t</object>
\t<object>
\t\t<pose>Unspecified</pose>
\t\t<bndbox>
\t\t\t<xmin>1</xmin>
\t\t\t<ymin>1</ymin>
\t\t\t<xmax>9</xmax>
\t\t\t<ymax>9</ymax>
\t\t</bndbox>
\t</object>
\t<object>
\t\t<name>vehicle</name>
\t\t<bndbox>
\t\t\t<xmin>50</xmin>
\t\t\t<ymin>60</ymin>
\t\t\t<xmax>40</xmax>
\t\t\t<ymax>70</ymax>
\t\t</bndbox>
\t</object>
</annotation>
"""

DIOR_R = """<annotation>
  <filename>00003.jpg</filename>
  <size><width>800</width><height>800</height><depth>3</depth></size>
  <object>
    <name>airplane</name>
    <pose>Unspecified</pose>
    <truncated>0</truncated>
    <difficult>0</difficult>
    <type>robndbox</type>
    <robndbox>
      <x_left_top>100</x_left_top>
      <y_left_top>50</y_left_top>
      <x_right_top>150</x_right_top>
      <y_right_top>100</y_right_top>
      <x_right_bottom>120</x_right_bottom>
      <y_right_bottom>130</y_right_bottom>
      <x_left_bottom>70</x_left_bottom>
      <y_left_bottom>80</y_left_bottom>
      <angle>45</angle>
    </robndbox>
  </object>
</annotation>
"""

FAIR1M = """<?xml version="1.0" encoding="utf-8"?>
<annotation>
  <source>
    <filename>1.tif</filename>
    <origin>GF2/GF3</origin>
  </source>
  <research>
    <version>1.0</version>
    <provider>FAIR1M</provider>
  </research>
  <size>
    <width>1000</width>
    <height>1000</height>
    <depth>3</depth>
  </size>
  <objects>
    <object>
      <coordinate>pixel</coordinate>
      <type>rectangle</type>
      <description>None</description>
      <possibleresult>
        <name>Small Car</name>
      </possibleresult>
      <points>
        <point>626.000000,454.000000</point>
        <point>638.000000,454.000000</point>
        <point>638.000000,480.000000</point>
        <point>626.000000,480.000000</point>
        <point>626.000000,454.000000</point>
      </points>
    </object>
    <object>
      <coordinate>pixel</coordinate>
      <type>rectangle</type>
      <description>None</description>
      <possibleresult>
        <name>Boeing737</name>
      </possibleresult>
      <points>
        <point>300.5,200.0</point>
        <point>340.0,220.0</point>
        <point>320.0,260.0</point>
        <point>280.5,240.0</point>
      </points>
    </object>
    <object>
      <coordinate>pixel</coordinate>
      <type>rectangle</type>
      <description>None</description>
      <possibleresult>
        <name>Tugboat</name>
      </possibleresult>
      <points>
        <point>10.0,10.0</point>
        <point>20.0,10.0</point>
        <point>20.0,20.0</point>
      </points>
    </object>
  </objects>
</annotation>
"""

HRSC = """<?xml version="1.0" encoding="utf-8"?>
<HRSC_Image>
  <Img_CusType>sealand</Img_CusType>
  <Img_ID>100000624</Img_ID>
  <Img_FileName>100000624</Img_FileName>
  <Img_FileFmt>bmp</Img_FileFmt>
  <Img_SizeWidth>1166</Img_SizeWidth>
  <Img_SizeHeight>753</Img_SizeHeight>
  <Img_SizeDepth>3</Img_SizeDepth>
  <HRSC_Objects>
    <HRSC_Object>
      <Object_ID>100000806</Object_ID>
      <Class_ID>100000013</Class_ID>
      <Object_NO>100000806</Object_NO>
      <truncated>0</truncated>
      <difficult>1</difficult>
      <box_xmin>80</box_xmin>
      <box_ymin>36</box_ymin>
      <box_xmax>120</box_xmax>
      <box_ymax>64</box_ymax>
      <mbox_cx>100.0</mbox_cx>
      <mbox_cy>50.0</mbox_cy>
      <mbox_w>40.0</mbox_w>
      <mbox_h>10.0</mbox_h>
      <mbox_ang>0.5235987755982988</mbox_ang>
      <header_x>117</header_x>
      <header_y>60</header_y>
      <seg_color>0,0,255</seg_color>
    </HRSC_Object>
  </HRSC_Objects>
</HRSC_Image>
"""

CSV = """image_path,xmin,ymin,xmax,ymax,label,score
OSBS_029.tif,203,67,227,90,Tree,0.91
OSBS_029.tif,256,99,288,140,Tree,0.72
OSBS_030.tif,166,253,225,304,Tree,0.55
OSBS_029.tif,365,2,350,27,Tree,0.40
OSBS_029.tif,12,14,30,41,Snag,0.63
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def by_number(result):
    return {a.number: a for a in result.annotations}


def ring(feature):
    return np.array(feature["geometry"].exterior.coords)


# -- DOTA --------------------------------------------------------------------------------------------
def test_dota_with_header_keeps_corners_difficult_gsd_and_reports_bad_lines(tmp_path):
    path = write(tmp_path, "P0001.txt", DOTA_V1)
    result = read_annotation_file(path)

    assert result.format == "dota"
    objects = by_number(result)
    assert sorted(objects) == [1, 2, 6]
    plane = objects[1]
    np.testing.assert_array_equal(plane.corners, [[2753, 2408], [2861, 2385], [2888, 2468], [2805, 2502]])
    assert (plane.class_name, plane.difficult, plane.line) == ("plane", 0, 3)
    assert plane.attributes == {"imagesource": "GoogleEarth", "gsd": pytest.approx(0.146343590398)}
    assert (objects[2].class_name, objects[2].difficult) == ("large-vehicle", 1)
    assert objects[6].difficult is None and objects[6].line == 8  # no difficulty flag -> null
    assert result.metadata["gsd"] == pytest.approx(0.146343590398)

    problems = {p.line: p for p in result.problems}
    assert sorted(problems) == [5, 6, 7]
    assert "5 values" in problems[5].message
    assert "'abc' is not a number" in problems[6].message
    assert "zero area" in problems[7].message
    assert all(p.source == path for p in result.problems)
    assert str(problems[6]).startswith(f"{path}:6: object 4:")


def test_dota_without_header_and_class_ids_per_dataset_version(tmp_path):
    path = write(tmp_path, "P2000.txt", DOTA_V2)
    result = read_annotation_file(path, "dota")
    assert [a.attributes for a in result.annotations] == [{}, {}, {}]  # no header, no header attributes

    out = str(tmp_path / "v2.gpkg")
    summary = import_annotations([path], out, dataset="DOTA-v2.0")
    rows = support.read_features(out, "boxes")
    assert [(r["class_name"], r["class_id"]) for r in rows] == [("helipad", 17), ("container-crane", 15),
                                                                 ("airport", 16)]
    assert summary.problems == [] and summary.annotations == 3

    out = str(tmp_path / "v15.gpkg")
    summary = import_annotations([path], out, dataset="dota1.5")
    assert [(r["class_name"], r["class_id"]) for r in support.read_features(out)] == [("container-crane", 15)]
    assert [(p.line, p.number) for p in summary.problems] == [(1, 1), (3, 3)]
    assert "'helipad' is not in the dota1.5 class list" in summary.problems[0].message


def test_dota_class_names_with_spaces_and_detection_by_most_lines(tmp_path):
    path = write(tmp_path, "P0005.txt", "1 2 3 4\n"  # an odd first line: the file is still DOTA
                                        "10 20 40 20 40 35 10 35 small vehicle 1\n"
                                        "10 20 40 20 40 35 10 35 large   vehicle\n"
                                        "10 20 40 20 40 35 10 35 Boeing 737\n")
    result = read_annotation_file(path)
    assert result.format == "dota"
    assert [(a.class_name, a.difficult, a.line) for a in result.annotations] == [
        ("small vehicle", 1, 2), ("large vehicle", None, 3), ("Boeing", 737, 4)]  # a last number is the flag
    (problem,) = result.problems
    assert (problem.line, problem.number) == (1, 1) and "4 values" in problem.message


def test_dataset_class_lists():
    assert len(DATASET_CLASSES["dota1.0"]) == 15 and len(DATASET_CLASSES["dota1.5"]) == 16
    assert DATASET_CLASSES["dota2.0"][:16] == DATASET_CLASSES["dota1.5"]  # ids are stable across versions
    assert len(DATASET_CLASSES["dota2.0"]) == 18 and len(DATASET_CLASSES["dior"]) == 20
    assert len(set(DATASET_CLASSES["fair1m2.0"])) == 37
    assert DATASET_CLASSES["dior"].index("Expressway-Service-area") == 7
    fair = dataset_classes("FAIR1M-v2.0")
    assert fair.resolve("Passenger_Ship") == "Passenger Ship"
    assert dataset_classes("samrs-fast").resolve("Passenger Ship") == "Passenger-Ship"
    assert dataset_classes("hrsc2016").resolve("100000013") == "ship"
    assert fair.resolve("Boeing999") is None
    with pytest.raises(InputError, match=r"Unknown dataset class list 'coco'.*dota1.0.*fair1m2.0"):
        dataset_classes("coco")


# -- VOC / DIOR / DIOR-R -----------------------------------------------------------------------------
def test_dior_voc_boxes_attributes_and_problems_with_xml_lines(tmp_path):
    path = write(tmp_path, "00001.xml", DIOR)
    result = read_annotation_file(path)

    assert result.format == "voc" and result.metadata["filename"] == "00001.jpg"
    golf, esa = result.annotations
    np.testing.assert_array_equal(golf.corners, [[133, 237], [684, 237], [684, 672], [133, 672]])
    assert (golf.class_name, golf.difficult, golf.line, golf.number) == ("golffield", 0, 12, 1)
    assert golf.attributes == {"truncated": 0, "pose": "Unspecified"}
    np.testing.assert_array_equal(esa.corners, [[20, 30], [120.5, 30], [120.5, 90], [20, 90]])
    assert (esa.difficult, esa.attributes["truncated"]) == (1, 1)

    assert [(p.line, p.number) for p in result.problems] == [(36, 3), (45, 4)]
    assert "no class name" in result.problems[0].message
    assert "negative width" in result.problems[1].message

    out = str(tmp_path / "dior.gpkg")
    import_annotations(path, out, dataset="dior")
    rows = support.read_features(out)
    assert [(r["class_name"], r["class_id"], r["difficult"], r["pose"]) for r in rows] == [
        ("golffield", 9, 0, "Unspecified"), ("Expressway-Service-area", 7, 1, "Unspecified")]


def test_dior_r_rotated_box_keeps_its_corners_and_angle(tmp_path):
    path = write(tmp_path, "00003.xml", DIOR_R)
    (plane,) = read_annotation_file(path, "dior-r").annotations
    np.testing.assert_array_equal(plane.corners, [[100, 50], [150, 100], [120, 130], [70, 80]])
    assert plane.attributes["angle"] == 45.0 and plane.class_name == "airplane"


# -- FAIR1M -------------------------------------------------------------------------------------------
def test_fair1m_points_with_and_without_closing_point(tmp_path):
    path = write(tmp_path, "1.xml", FAIR1M)
    result = read_annotation_file(path)

    assert result.format == "fair1m" and result.metadata["origin"] == "GF2/GF3"
    car, plane = result.annotations
    np.testing.assert_array_equal(car.corners, [[626, 454], [638, 454], [638, 480], [626, 480]])
    np.testing.assert_array_equal(plane.corners, [[300.5, 200], [340, 220], [320, 260], [280.5, 240]])
    assert (car.class_name, plane.class_name, car.difficult) == ("Small Car", "Boeing737", None)
    (problem,) = result.problems
    assert problem.number == 3 and problem.line == 46 and "3 points" in problem.message

    out = str(tmp_path / "fast.gpkg")
    import_annotations([path], out, dataset="samrs-fast")
    rows = support.read_features(out)
    assert [(r["class_name"], r["class_id"], r["source_class"]) for r in rows] == [
        ("Small-Car", 29, "Small Car"), ("Boeing737", 7, "Boeing737")]
    out = str(tmp_path / "fair.gpkg")
    import_annotations([path], out, dataset="fair1m2.0")
    assert [(r["class_name"], r["class_id"]) for r in support.read_features(out)] == [
        ("Small Car", 20), ("Boeing737", 0)]


# -- HRSC2016 -----------------------------------------------------------------------------------------
def test_hrsc_rotated_box_corners_from_centre_size_and_angle(tmp_path):
    path = write(tmp_path, "100000624.xml", HRSC)
    (ship,) = read_annotation_file(path).annotations

    # centre (100, 50), 40 x 10, 30°: the long side runs along (cos 30°, sin 30°) = down-right on screen.
    # half-long (17.3205, 10), half-short (-2.5, 4.3301)
    np.testing.assert_allclose(ship.corners, [[85.1795, 35.6699], [119.8205, 55.6699],
                                              [114.8205, 64.3301], [80.1795, 44.3301]], atol=1e-4)
    edges = np.diff(np.vstack([ship.corners, ship.corners[:1]]), axis=0)
    assert np.hypot(*edges.T) == pytest.approx([40, 10, 40, 10])
    assert math.degrees(math.atan2(edges[0, 1], edges[0, 0])) == pytest.approx(30)
    assert (ship.class_name, ship.difficult) == ("100000013", 1)
    assert ship.attributes == {"mbox_ang": pytest.approx(math.pi / 6), "truncated": 0}

    out = str(tmp_path / "hrsc.gpkg")
    summary = import_annotations([path], out, dataset="hrsc2016")
    (row,) = support.read_features(out)
    assert (row["class_name"], row["class_id"], row["source_class"], row["difficult"]) == ("ship", 0, "100000013", 1)
    assert summary.classes == [(0, "ship", 1)]


# -- CSV ----------------------------------------------------------------------------------------------
def test_csv_rows_of_one_image_with_columns_kept(tmp_path):
    path = write(tmp_path, "predictions.csv", CSV)
    result = read_annotation_file(path, image_name=str(tmp_path / "OSBS_029.tif"))

    trees = result.annotations
    assert [a.class_name for a in trees] == ["Tree", "Tree", "Snag"]
    np.testing.assert_array_equal(trees[0].corners, [[203, 67], [227, 67], [227, 90], [203, 90]])
    assert trees[0].attributes == {"image_path": "OSBS_029.tif", "score": 0.91}
    assert [a.line for a in trees] == [2, 3, 6]
    (problem,) = result.problems
    assert problem.line == 5 and "negative width" in problem.message

    assert len(read_annotation_file(path).annotations) == 4  # without an image: every image's rows
    other = read_annotation_file(path, image_name="OSBS_999.png")
    assert other.annotations == [] and "no row is for image 'OSBS_999.png'" in other.problems[0].message


def test_csv_column_aliases_and_missing_columns(tmp_path):
    path = write(tmp_path, "boxes.csv", "filename;x_min;y_min;x_max;y_max;class;difficult\n"
                                        "a.png;1;2;11;22;car;1\n")
    (car,) = read_annotation_file(path).annotations
    np.testing.assert_array_equal(car.corners, [[1, 2], [11, 2], [11, 22], [1, 22]])
    assert (car.class_name, car.difficult, car.attributes) == ("car", 1, {"filename": "a.png"})

    bad = write(tmp_path, "bad.csv", "image,x,y,w,h\na.png,1,2,3,4\n")
    (problem,) = read_annotation_file(bad, "csv").problems
    assert problem.line == 1 and "no column for xmin, ymin, xmax, ymax, label" in problem.message


# -- formats, files, errors ---------------------------------------------------------------------------
def test_format_detection_and_whole_file_problems(tmp_path):
    files = {"P0001.txt": DOTA_V1, "00001.xml": DIOR, "00003.xml": DIOR_R, "1.xml": FAIR1M,
             "100000624.xml": HRSC, "boxes.csv": CSV, "boxes.txt": CSV, "empty.txt": "imagesource:null\ngsd:null\n"}
    detected = {name: detect_format(write(tmp_path, name, text)) for name, text in files.items()}
    assert detected == {"P0001.txt": "dota", "00001.xml": "voc", "00003.xml": "voc", "1.xml": "fair1m",
                        "100000624.xml": "hrsc2016", "boxes.csv": "csv", "boxes.txt": "csv", "empty.txt": "dota"}

    broken = write(tmp_path, "broken.xml", "<annotation>\n<object>\n<name>ship</name>\n</annotation>\n")
    result = read_annotation_file(broken)
    (problem,) = result.problems
    assert result.annotations == [] and problem.line == 4 and "not well-formed XML" in problem.message

    yolo = write(tmp_path, "yolo.txt", "0 0.5 0.5 0.2 0.1\n")
    problem, line = read_annotation_file(yolo).problems  # the whole file, then each line that is no DOTA line
    assert "cannot be recognised" in problem.message and problem.source == yolo and problem.number is None
    assert line.line == 1 and "looks like a YOLO line" in line.message

    other_xml = write(tmp_path, "coco.xml", "<dataset><image/></dataset>")
    assert "root element <dataset>" in read_annotation_file(other_xml).problems[0].message

    with pytest.raises(InputError, match="Unknown annotation format 'yolo'"):
        read_annotation_file(yolo, "yolo")
    with pytest.raises(InputError, match="does not exist"):
        import_annotations([str(tmp_path / "missing.txt")], str(tmp_path / "o.gpkg"))
    os.mkdir(tmp_path / "empty")
    with pytest.raises(InputError, match="No annotation files"):
        import_annotations([str(tmp_path / "empty")], str(tmp_path / "o.gpkg"))
    with pytest.raises(InputError, match="Unknown dataset class list"):
        import_annotations([yolo], str(tmp_path / "o.gpkg"), dataset="dota3")
    assert not os.path.exists(tmp_path / "o.gpkg")


def test_folder_import_continues_past_unreadable_files(tmp_path):
    folder = tmp_path / "labelTxt"
    folder.mkdir()
    write(folder, "P0001.txt", DOTA_V1)
    write(folder, "P2000.txt", DOTA_V2)
    write(folder, "P0003.txt", "\x00\xff garbage that is no DOTA line\n")
    out = str(tmp_path / "all.gpkg")
    summary = import_annotations([str(folder)], out)

    assert (summary.files, summary.annotations) == (3, 6)
    assert {os.path.basename(p.source) for p in summary.problems} == {"P0001.txt", "P0003.txt"}
    rows = support.read_features(out)
    names = sorted({r["class_name"] for r in rows})
    assert [(r["class_name"], r["class_id"]) for r in rows][:1] == [("plane", names.index("plane"))]
    assert {r["source"] for r in rows} == {"P0001.txt", "P2000.txt"}
    assert summary.classes == [(i, n, sum(r["class_name"] == n for r in rows)) for i, n in enumerate(names)]
    assert "Imported 6 box(es) from 3 file(s)" in summary.describe()


def test_find_annotation_file_by_stem(tmp_path):
    write(tmp_path, "P0001.txt", DOTA_V1)
    write(tmp_path, "00001.xml", DIOR)
    assert find_annotation_file(str(tmp_path / "images" / "P0001.png"), str(tmp_path)) == str(tmp_path / "P0001.txt")
    assert find_annotation_file("00001.jpg", str(tmp_path)) == str(tmp_path / "00001.xml")
    assert find_annotation_file("P0002.png", str(tmp_path)) is None
    write(tmp_path, "P0001.xml", DIOR)
    with pytest.raises(InputError, match="several annotation files"):
        find_annotation_file("P0001.png", str(tmp_path))
    assert find_annotation_file("P0001.png", str(tmp_path), "dota") == str(tmp_path / "P0001.txt")


# -- the box layer on the map -------------------------------------------------------------------------
def test_georeferenced_image_places_pixel_corners_on_the_map(tmp_path):
    image = support.write_raster(tmp_path / "tile.tif", np.zeros((1, 60, 80), np.uint8), UTM_T)
    label = write(tmp_path, "tile.txt", "10 20 30 20 30 40 10 40 ship 0\n")
    out = str(tmp_path / "boxes.gpkg")
    summary = import_annotations([label], out, image_path=image)

    assert summary.georeferenced
    with fiona.open(out, layer="boxes") as layer:
        assert rasterio.crs.CRS.from_wkt(layer.crs_wkt).to_epsg() == 32617
        assert layer.schema["properties"]["class_id"].startswith("int")
        assert layer.schema["properties"]["difficult"].startswith("int")
        (feature,) = list(layer)
    coords = feature["geometry"]["coordinates"][0]
    assert coords[0] == pytest.approx((600005.0, 3299990.0))  # pixel corner (10, 20)
    assert coords[2] == pytest.approx((600015.0, 3299980.0))  # pixel corner (30, 40)
    assert coords[-1] == coords[0] and len(coords) == 5
    assert (feature["properties"]["source"], feature["properties"]["line"]) == ("tile.txt", 1)


def write_png(tmp_path, width=40, height=30):
    path = str(tmp_path / "chip.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="PNG", width=width, height=height, count=1, dtype="uint8") as ds:
            ds.write(np.full((1, height, width), 128, np.uint8))
    return path


def test_image_without_georeference_gives_pixel_space_layer(tmp_path):
    png = write_png(tmp_path)
    label = write(tmp_path, "chip.txt", "10 5 20 5 20 12 10 12 plane 0\n")
    out = str(tmp_path / "boxes.gpkg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = import_annotations([label], out, image_path=png)
    assert not [w for w in caught if issubclass(w.category, NotGeoreferencedWarning)]

    assert not summary.georeferenced and summary.crs_wkt == ""
    with rasterio.open(png) as ds:
        assert pixel_to_map_transform(ds) == PIXEL_SPACE == Affine(1, 0, 0, 0, -1, 0)
    with fiona.open(out) as layer:  # GeoPackage's "no CRS": srs_id -1, which QGIS never reprojects
        assert layer.crs_wkt.startswith('LOCAL_CS["Undefined Cartesian SRS"')
        (feature,) = list(layer)
    assert feature["geometry"]["coordinates"][0][:4] == [(10, -5), (20, -5), (20, -12), (10, -12)]

    no_image = str(tmp_path / "no_image.gpkg")
    import_annotations([label], no_image)
    assert support.read_features(no_image)[0]["geometry"].equals(support.read_features(out)[0]["geometry"])


def test_failed_write_leaves_the_previous_file_untouched(tmp_path):
    label = write(tmp_path, "P2000.txt", DOTA_V2)
    out = tmp_path / "boxes.gpkg"
    import_annotations([label], str(out))
    before = out.read_bytes()
    annotations = read_annotation_file(label).annotations
    with pytest.raises(KeyError):  # a class without an id fails mid-way through writing
        write_box_layer(str(out), annotations, {"helipad": 0}, PIXEL_SPACE)
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["P2000.txt", "boxes.gpkg"]
    with pytest.raises(InputError, match="must be a GeoPackage"):
        write_box_layer(str(tmp_path / "boxes.shp"), annotations, {}, PIXEL_SPACE)


def test_pixel_space_layer_lines_up_with_the_image_in_qgis(qgis_app, tmp_path):
    from qgis.core import (QgsCoordinateReferenceSystem, QgsMapSettings, QgsRasterLayer, QgsRectangle,
                           QgsVectorLayer)

    png = write_png(tmp_path)
    label = write(tmp_path, "chip.txt", "10 5 20 5 20 12 10 12 plane 0\n0 0 40 0 40 30 0 30 field 0\n")
    out = str(tmp_path / "boxes.gpkg")
    import_annotations([label], out, image_path=png)

    raster = QgsRasterLayer(png, "chip")
    boxes = QgsVectorLayer(out + "|layername=boxes", "b", "ogr")
    assert raster.isValid() and boxes.isValid() and boxes.featureCount() == 2
    assert raster.extent() == QgsRectangle(0, -30, 40, 0)
    assert boxes.extent() == raster.extent()  # the whole-image box covers exactly the image
    plane = next(f for f in boxes.getFeatures() if f["class_name"] == "plane")
    assert plane.geometry().boundingBox() == QgsRectangle(10, -12, 20, -5)
    assert raster.extent().contains(plane.geometry().boundingBox())
    for project_crs in (QgsCoordinateReferenceSystem(), QgsCoordinateReferenceSystem("EPSG:3857")):
        settings = QgsMapSettings()  # whatever the project CRS, neither layer is reprojected: they stay together
        settings.setLayers([boxes, raster])
        settings.setDestinationCrs(project_crs)
        assert settings.layerExtentToOutputExtent(boxes, boxes.extent()) == QgsRectangle(0, -30, 40, 0)
        assert settings.layerExtentToOutputExtent(raster, raster.extent()) == QgsRectangle(0, -30, 40, 0)
