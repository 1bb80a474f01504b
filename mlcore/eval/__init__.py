"""How good it is: window and object metrics, COCO AP, aligned-tile accuracy, the loop's figures."""
